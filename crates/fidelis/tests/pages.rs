//! The console and the portal in a real headless Chromium (Debian's `chromium`, driven by
//! `chromedriver` through WebDriver), against a real `fidelis serve`, on SQLite and on a
//! throw-away PostgreSQL. Every page visited is checked with axe-core (no serious or
//! critical violation) and photographed into `target/screenshots/<database>/`.
//!
//! `cargo xtask test` installs Chromium and its driver when they are missing; run alone,
//! this test stops with how to install them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;
use common::{ADMIN, Server};

macro_rules! both_dialects {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = fidelis_testkit::sqlite_db();
                    super::$name(super::Server::start_with(&db.url, super::SERVE).await, "sqlite").await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Server::start_with(&fidelis_testkit::pg_url(), super::SERVE).await, "postgres").await;
                }
            )*
        }
    };
}

both_dialects!(staff_and_members_use_the_pages_in_a_browser);

/// One webhook attempt, soon: a delivery to a closed port is dead within the test.
const SERVE: &[&str] = &["--webhook-attempts", "1", "--webhook-backoff-ms", "50"];

const AXE: &str = include_str!("assets/axe.min.js");

/// A chromedriver process and a WebDriver session in headless Chromium.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    taken: usize,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find_program(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        Command::new("which")
            .arg(n)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    })
}

impl Browser {
    async fn start(shots: &str) -> Self {
        let (Some(chromium), Some(chromedriver)) = (
            find_program(&["chromium", "chromium-browser", "google-chrome"]),
            find_program(&["chromedriver"]),
        ) else {
            panic!(
                "the browser tests need Chromium and chromedriver: run `cargo xtask test` (it installs them), \
                 or apt-get install chromium chromium-driver"
            );
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                   "--disable-dev-shm-usage", "--window-size=1280,1024", "--lang=en-GB"]}),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "chromedriver did not start: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/screenshots")
            .join(shots);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            client,
            driver,
            shots,
            taken: 0,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn text(&self) -> String {
        self.client
            .execute("return document.body.innerText", vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Sets a (long) field's value at once, as pasting would.
    async fn paste(&self, css: &str, value: &str) {
        self.client
            .execute(
                "document.querySelector(arguments[0]).value = arguments[1]",
                vec![json!(css), json!(value)],
            )
            .await
            .unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks what leads to another page, and waits until that page has loaded.
    async fn follow(&self, css: &str) {
        self.client
            .execute("window.__left = true", vec![])
            .await
            .unwrap();
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.__left === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if loaded {
                break;
            }
            assert!(Instant::now() < deadline, "clicking {css} led nowhere");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element_text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Saves a screenshot, and checks the page with axe-core: no serious or critical
    /// violation.
    async fn check(&mut self, name: &str) {
        self.taken += 1;
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(
            self.shots.join(format!("{:02}-{name}.png", self.taken)),
            png,
        )
        .unwrap();
        self.client.execute(AXE, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                   .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                       .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))))
                   .catch(e => done(['axe did not run: ' + e]));",
                vec![],
            )
            .await
            .unwrap();
        let violations = found.as_array().cloned().unwrap_or_default();
        assert!(
            violations.is_empty(),
            "{name}: accessibility violations: {violations:#?}"
        );
    }
}

fn program() -> Value {
    json!({"name": "Shop", "time_zone": "Asia/Tokyo", "money_currency": "JPY",
        "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "rolling", "months": 12},
                        "transfer": {"daily_limit": 1000}},
                       {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
        "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "1"}], "days_before_enrolment": 3650},
        "tier_groups": [{"code": "status", "name": "Status", "currency": "status",
                         "tiers": [{"code": "member", "name": "Member", "threshold": 0}, {"code": "gold", "name": "Gold", "threshold": 10000}]}],
        "promotions": [{"code": "club", "name": "Club bonus", "status": "active", "opt_in": true,
                        "actions": [{"type": "fixed", "currency": "points", "points": 50}]},
                       {"code": "big-buy", "name": "Big buy", "status": "active", "condition": "journal.amount >= 2000.0",
                        "actions": [{"type": "badge", "badge": "big-spender"},
                                    {"type": "benefit", "benefit": {"code": "lounge-pass", "name": "Lounge pass"}, "days": 30}]}],
        "badges": [{"code": "big-spender", "name": "Big spender"}],
        "vouchers": [{"code": "coffee", "name": "Free coffee", "value": {"free_product": "COFFEE"}}],
        "segments": [{"code": "active", "name": "Active members", "condition": "member.status == 'active'"}],
        "fraud": {"rules": [{"rule": "shared_receipt"}, {"rule": "transfer_ring", "length": 2, "within_days": 30}]}})
}

/// A form body, URL-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The session cookie a sign-in sets, by a plain HTTP client (for its flags).
async fn sign_in_cookie(
    server: &Server,
    email: &str,
    password: &str,
    proto: Option<&str>,
) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/console/sign-in", server.base))
        .send()
        .await
        .unwrap();
    let cookie = page
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let token = html
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    // Without the token: refused, and no session.
    let refused = http
        .post(format!("{}/console/sign-in", server.base))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("email", email), ("password", password)]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.headers().get("set-cookie").is_none());
    // From another site: refused.
    let foreign = http
        .post(format!("{}/console/sign-in", server.base))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("_csrf", token.as_str()),
            ("email", email),
            ("password", password),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let mut request = http
        .post(format!("{}/console/sign-in", server.base))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("_csrf", token.as_str()),
            ("email", email),
            ("password", password),
        ]));
    if let Some(proto) = proto {
        request = request.header("x-forwarded-proto", proto);
    }
    let signed = request.send().await.unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("fidelis_console="))
        .expect("a session cookie")
}

async fn staff_and_members_use_the_pages_in_a_browser(server: Server, database: &str) {
    let base = server.base.clone();
    // The world: a program with tiers and an opt-in promotion, members with history,
    // staff users, and a member's one-time portal link from enrolment.
    let (status, _, body) = server
        .call(reqwest::Method::PUT, "/programs/shop", Some(program()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, ada) = server
        .post("/programs/shop/members", json!({"member": "ada-lovelace", "profile": {"name": "Ada Lovelace", "email": "ada@example.com"},
                                                "enrolled_at": "2025-01-01T00:00:00Z", "portal_link": true}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ada}");
    let link = ada["portal_link"]["link"]
        .as_str()
        .expect("a portal link")
        .to_owned();
    for m in ["grace-hopper", "alan-turing"] {
        let (status, body) = server
            .post(
                "/programs/shop/members",
                json!({"member": m, "profile": {"name": m.replace('-', " ")}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for (email, role) in [
        ("admin@shop.test", "admin"),
        ("agent@shop.test", "agent"),
        ("member@shop.test", "member"),
    ] {
        let (status, body) = server
            .post("/users", json!({"email": email, "password": "a long enough password", "role": role,
                                   "program": if role == "admin" { Value::Null } else { json!("shop") },
                                   "member": if role == "member" { json!("ada-lovelace") } else { Value::Null }}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let recent = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    for (i, amount) in ["1200", "800", "2500"].iter().enumerate() {
        let (status, body) = server
            .post("/programs/shop/journals", json!({"external_id": format!("p-{i}"), "member": "ada-lovelace", "type": "purchase",
                                      "occurred_at": recent, "amount": amount, "currency": "JPY"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Ada and Alan share a household (her points so far stay hers).
    let (status, body) = server
        .post(
            "/programs/shop/groups",
            json!({"group": "lovelace-home", "name": "Lovelace home", "share_percent": 10,
                                              "redeem": "owner", "owner": "ada-lovelace"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server
        .post(
            "/programs/shop/groups/lovelace-home/members",
            json!({"member": "alan-turing"}),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    // The reward catalog: a mug that comes with a coffee voucher, and a Gold-only lounge.
    for (item, body) in [
        (
            "mug",
            json!({"name": "Fidelis mug", "currency": "points", "points": 500, "stock": 3, "voucher": "coffee"}),
        ),
        (
            "lounge",
            json!({"name": "Lounge access", "currency": "points", "points": 100, "tiers": ["gold"]}),
        ),
    ] {
        let (status, _, body) = server
            .call(
                reqwest::Method::PUT,
                &format!("/programs/shop/catalog/{item}"),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // The session cookie's flags; Secure when the request came over TLS.
    let plain = sign_in_cookie(&server, "admin@shop.test", "a long enough password", None).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(plain.contains(flag), "{plain} lacks {flag}");
    }
    assert!(!plain.contains("Secure"), "{plain}");
    let tls = sign_in_cookie(
        &server,
        "admin@shop.test",
        "a long enough password",
        Some("https"),
    )
    .await;
    assert!(tls.contains("Secure"), "{tls}");

    let mut b = Browser::start(database).await;

    // Sign in: a page first, a wrong password, then by keyboard only.
    b.goto(&format!("{base}/")).await;
    assert!(
        b.path().await.starts_with("/console/sign-in"),
        "{}",
        b.path().await
    );
    b.check("console-sign-in").await;
    b.fill("#email", "admin@shop.test").await;
    b.fill("#password", "not the password").await;
    b.follow("button[type=submit]").await;
    assert!(
        b.text()
            .await
            .contains("The email or the password is wrong.")
    );
    b.check("console-sign-in-refused").await;
    b.fill("#email", "admin@shop.test").await;
    let password = b.client.find(Locator::Css("#password")).await.unwrap();
    b.client
        .execute("window.__left = true", vec![])
        .await
        .unwrap();
    password
        .send_keys("a long enough password\u{E007}")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.path().await, "/console");
    assert!(b.text().await.contains("shop"));
    b.check("console-programs").await;

    // The dashboard.
    b.goto(&format!("{base}/console/programs/shop")).await;
    let outstanding_before = b.element_text("#fig-outstanding-points").await;
    assert_eq!(outstanding_before, "4,500");
    // The liability: the same points (none pending), valued, with the month-end chart.
    assert_eq!(b.element_text("#liability-points-points").await, "4,500");
    assert!(
        b.element_text("#liability-breakage-points")
            .await
            .contains("not enough history yet")
    );
    assert_eq!(b.element_text("#fig-members").await, "3");
    assert_eq!(b.element_text("#fig-active-30").await, "1");
    assert!(
        b.client
            .find(Locator::Css("figure.chart svg"))
            .await
            .is_ok(),
        "charts are drawn"
    );
    b.check("console-dashboard").await;

    // Search a member and open the 360° view.
    b.goto(&format!("{base}/console/programs/shop/members"))
        .await;
    b.fill("#q", "lovelace").await;
    b.follow("form[role=search] button").await;
    assert!(b.text().await.contains("ada-lovelace"));
    assert!(!b.text().await.contains("grace-hopper"));
    b.check("console-member-search").await;
    b.follow("#member-results a").await;
    assert_eq!(
        b.path().await,
        "/console/programs/shop/members/ada-lovelace"
    );
    assert_eq!(b.element_text("#balance-points").await, "4,500");
    b.check("console-member").await;

    // Adjust points: refused without the confirmation, done with it; the ledger and the
    // balance show it.
    b.fill("#adj-points", "250").await;
    b.fill("#adj-reason", "late-parcel").await;
    b.click("#adjust-form input[name=confirm]").await;
    b.follow("#adjust-form button").await;
    assert!(
        b.text().await.contains("The points were adjusted."),
        "{}",
        b.text().await
    );
    assert_eq!(b.element_text("#balance-points").await, "4,750");
    let ledger = b.element_text("#ledger").await;
    assert!(
        ledger.contains("adjustment") && ledger.contains("250"),
        "{ledger}"
    );
    b.check("console-member-adjusted").await;
    // The same by keyboard alone: type, Tab to the next field, Space ticks, Enter sends.
    b.client
        .find(Locator::Css("#adj-points"))
        .await
        .unwrap()
        .send_keys("-50\u{E004}kbd-correction\u{E004} ")
        .await
        .unwrap();
    b.client
        .execute("window.__left = true", vec![])
        .await
        .unwrap();
    let active = b.client.active_element().await.unwrap();
    assert_eq!(
        active.attr("name").await.unwrap().as_deref(),
        Some("confirm"),
        "Tab reaches the confirmation"
    );
    active.send_keys("\u{E004}\u{E007}").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        b.element_text("#balance-points").await,
        "4,700",
        "{}",
        b.text().await
    );
    b.fill("#adj-points", "50").await;
    b.fill("#adj-reason", "kbd-undo").await;
    b.click("#adjust-form input[name=confirm]").await;
    b.follow("#adjust-form button").await;
    assert_eq!(b.element_text("#balance-points").await, "4,750");
    // The dashboard, refreshed, shows the new outstanding points.
    b.goto(&format!("{base}/console/programs/shop")).await;
    b.follow("form[action$='dashboard/refresh'] button").await;
    assert_eq!(b.element_text("#fig-outstanding-points").await, "4,750");

    // Partners and claims: a partner's figures and statements, and a claim decided from
    // the queue.
    let (status, _, body) = server
        .call(
            reqwest::Method::PUT,
            "/programs/shop/partners/cars",
            Some(json!({"name": "Car rental", "roles": "earn", "billing": "postpaid", "cost_per_point": "0.5"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, claim) = server
        .post(
            "/programs/shop/claims",
            json!({"member": "ada-lovelace", "reference": "RCPT-1", "occurred_at": recent, "amount": "800", "note": "paid cash"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{claim}");
    let id = claim["claim_id"].as_str().unwrap();
    b.goto(&format!("{base}/console/programs/shop/partners"))
        .await;
    assert!(b.element_text("#partner-cars").await.contains("Car rental"));
    assert!(
        b.element_text(&format!("#claim-{id}"))
            .await
            .contains("RCPT-1")
    );
    b.check("console-partners").await;
    b.fill(&format!("#reason-{id}"), "no such receipt").await;
    b.click(&format!(
        "#claim-{id} form[action$='/reject'] input[name=confirm]"
    ))
    .await;
    b.follow(&format!("#claim-{id} form[action$='/reject'] button"))
        .await;
    assert!(
        b.text().await.contains("The claim is rejected"),
        "{}",
        b.text().await
    );
    assert!(
        b.element_text("#claims")
            .await
            .contains("No claim is waiting")
    );

    // Webhooks: one added from the form to an address nothing listens on; the test send
    // says so, the next event dies after its one attempt and is replayed from the page.
    b.goto(&format!("{base}/console/programs/shop/webhooks"))
        .await;
    b.fill("#webhook-url", "http://127.0.0.1:9/hook").await;
    b.fill("#webhook-description", "the CRM").await;
    b.click("input[name='event.all']").await;
    b.follow("form[action$='/webhooks'] button").await;
    let secret = b.element_text("#webhook-secret").await;
    assert!(secret.contains("whsec_"), "{secret}");
    let hooks = server.get("/programs/shop/webhooks").await;
    let hook = hooks["webhooks"][0]["id"].as_i64().unwrap();
    b.follow(&format!("#test-{hook}")).await;
    assert!(
        b.element_text("#notice").await.contains("Not delivered"),
        "{}",
        b.text().await
    );
    let (status, body) = server
        .post(
            "/programs/shop/members",
            json!({"member": "hook-member", "profile": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = server
        .post(
            "/programs/shop/journals",
            json!({"external_id": "hook-1", "member": "hook-member", "type": "purchase",
                   "occurred_at": recent, "amount": "1000", "currency": "JPY"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The enrolment's event and the journal's.
    while server.get("/programs/shop/webhooks").await["webhooks"][0]["dead"]
        .as_i64()
        .unwrap_or(0)
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.goto(&format!("{base}/console/programs/shop/webhooks"))
        .await;
    assert!(
        b.element_text(&format!("#dead-{hook}"))
            .await
            .contains("points.earned")
    );
    b.check("console-webhooks").await;
    b.follow(&format!("#replay-{hook}")).await;
    assert!(
        b.element_text("#notice")
            .await
            .contains("dead deliveries are queued again"),
        "{}",
        b.text().await
    );

    // Messages: a template previewed as typed, refused with its line when it does not
    // render, then saved as the program's own.
    b.goto(&format!(
        "{base}/console/programs/shop/messages?event=member.enrolled&language=ja"
    ))
    .await;
    assert!(
        b.element_text("#preview-subject")
            .await
            .contains("へようこそ")
    );
    b.fill("#t-subject", "{{ member.name }}さん、ようこそ")
        .await;
    b.follow("#preview-button").await;
    assert_eq!(
        b.element_text("#preview-subject").await,
        "Ada Lovelaceさん、ようこそ"
    );
    b.fill("#t-text", "ok\n{{ member.name | nosuchfilter }}")
        .await;
    b.follow("#save-button").await;
    assert!(
        b.element_text("#notice").await.contains("line 2"),
        "{}",
        b.text().await
    );
    b.fill("#t-text", "{{ program.name }}へようこそ。").await;
    b.follow("#save-button").await;
    assert!(b.element_text("#notice").await.contains("is saved"));
    assert!(
        b.element_text("#template-member\\.enrolled-ja")
            .await
            .contains("the program's")
    );
    b.check("console-messages").await;

    // Fraud review: the same receipt for a second member is held, with its reason in the
    // queue; released from the console, it earns, and the decision is listed.
    for (id, member) in [("rc-1", "mary-somerville"), ("rc-2", "emmy-noether")] {
        let (status, body) = server
            .post("/programs/shop/members", json!({"member": member}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = server
            .post(
                "/programs/shop/journals",
                json!({"external_id": id, "member": member, "type": "purchase",
                                      "occurred_at": recent, "amount": "700", "currency": "JPY",
                                      "attributes": {"receipt": "R-5501"}}),
            )
            .await;
        let expected = if id == "rc-1" {
            StatusCode::CREATED
        } else {
            StatusCode::ACCEPTED
        };
        assert_eq!(status, expected, "{body}");
    }
    b.goto(&format!("{base}/console/programs/shop/fraud")).await;
    assert!(
        b.element_text("#held-rc-2")
            .await
            .contains("the same receipt was sent for member mary-somerville"),
        "{}",
        b.text().await
    );
    b.check("console-fraud").await;
    b.click("#held-rc-2 form input[name=confirm]").await;
    b.follow("#held-rc-2 form button").await;
    assert!(b.element_text("#notice").await.contains("Released"));
    assert!(b.element_text("#decided-rc-2").await.contains("released"));
    assert_eq!(
        server.get("/programs/shop/journals/rc-2").await["status"],
        "processed"
    );

    // Segments: none counted before the jobs refresh them, then the members in each.
    b.goto(&format!("{base}/console/programs/shop/segments"))
        .await;
    assert!(
        b.element_text("#refresh")
            .await
            .contains("Not refreshed yet"),
        "{}",
        b.text().await
    );
    let (status, jobs) = server.post("/programs/shop/jobs/run", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    let active = jobs["segments"]["active"].as_u64().unwrap();
    assert!(active >= 2, "{jobs}");
    b.goto(&format!("{base}/console/programs/shop/segments"))
        .await;
    let row = b.element_text("#segment-active").await;
    assert!(
        row.contains("Active members") && row.contains(&active.to_string()),
        "{row}"
    );
    b.check("console-segments").await;

    // The 360° view shows the household, and each ledger entry leads to its journal:
    // the points by source and the document.
    b.goto(&format!(
        "{base}/console/programs/shop/members/ada-lovelace"
    ))
    .await;
    assert!(
        b.element_text("#member-segments").await.contains("active"),
        "{}",
        b.text().await
    );
    let household = b.element_text("#household").await;
    assert!(
        household.contains("lovelace-home") && household.contains("alan-turing"),
        "{household}"
    );
    let ledger = b.element_text("#ledger").await;
    assert!(ledger.contains("base"), "earned from: {ledger}");
    b.follow("#ledger a[href$='/journals/p-0']").await;
    let awards = b.element_text("#journal-awards").await;
    assert!(awards.contains("base"), "{awards}");
    assert!(
        b.text().await.contains("\"external_id\": \"p-0\""),
        "the document as sent"
    );
    b.check("console-journal").await;

    // A definition with an error: shown at its line, nothing saved.
    b.goto(&format!("{base}/console/programs/shop/definition"))
        .await;
    b.check("console-definition").await;
    let yaml = "name: Shop\ntime_zone: Asia/Tokyo\nmoney_currency: JPY\ncurrencies:\n- code: points\n  name: Points\n  kind: redeemable\n  expiry:\n    policy: rolling\n    months: -3\n";
    b.paste("#definition", yaml).await;
    b.follow("form[action$='/definition'] button").await;
    let problems = b.element_text("#problems").await;
    assert!(
        problems.contains("line 10 · currencies[0].expiry.months"),
        "{problems}"
    );
    assert!(
        problems.contains("currencies[0].expiry.months"),
        "{problems}"
    );
    b.check("console-definition-problems").await;
    let (_, _, definition) = server
        .call(reqwest::Method::GET, "/programs/shop", None)
        .await;
    assert_eq!(definition["time_zone"], "Asia/Tokyo");
    assert!(definition["tier_groups"].is_array(), "nothing was saved");
    // The condition check as one types.
    b.fill("#condition", "journal.amount >").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        b.text().await.contains("column"),
        "the error has its position"
    );
    b.fill("#condition", "journal.amount > 100").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(b.text().await.contains("The condition compiles"));

    // A dry run: the journal's points and every promotion's verdict.
    b.goto(&format!("{base}/console/programs/shop/dry-run"))
        .await;
    b.paste(
        "#journal",
        &json!({"type": "purchase", "member": "grace-hopper", "amount": "300", "currency": "JPY"})
            .to_string(),
    )
    .await;
    b.follow("#paste-form button").await;
    let verdicts = b.element_text("#promotion-verdicts").await;
    assert!(
        verdicts.contains("club") && verdicts.contains("not joined"),
        "{verdicts}"
    );
    b.check("console-dry-run").await;
    // Or composed from fields: the same answer, and the JSON it became to refine by hand.
    b.fill("#c-member", "grace-hopper").await;
    b.fill("#c-amount", "300").await;
    b.fill("#c-currency", "JPY").await;
    b.fill("input[name=line1_sku]", "SH-1").await;
    b.fill("input[name=line1_category]", "shoes").await;
    b.fill("input[name=line1_amount]", "300").await;
    b.follow("#compose-form button").await;
    let verdicts = b.element_text("#promotion-verdicts").await;
    assert!(verdicts.contains("not joined"), "{verdicts}");
    let composed: Value = serde_json::from_str(
        &b.client
            .find(Locator::Css("#journal"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default(),
    )
    .expect("the composed journal is JSON");
    assert_eq!(composed["lines"][0]["category"], "shoes", "{composed}");
    // The form keeps what was typed, to change one field and run again.
    for (field, typed) in [
        ("#c-member", "grace-hopper"),
        ("input[name=line1_sku]", "SH-1"),
    ] {
        let kept = b
            .client
            .find(Locator::Css(field))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default();
        assert_eq!(kept, typed, "{field} after the run");
    }
    b.check("console-dry-run-composed").await;
    assert_eq!(
        server.ledger_len("grace-hopper").await,
        0,
        "a dry run writes nothing"
    );

    // The other console pages.
    for (path, name) in [
        ("/console/programs/shop/promotions", "console-promotions"),
        ("/console/programs/shop/catalog", "console-catalog"),
        ("/console/audit", "console-audit"),
        ("/console/access", "console-access"),
    ] {
        b.goto(&format!("{base}{path}")).await;
        b.check(name).await;
    }
    assert!(b.text().await.contains("agent@shop.test"));

    // Sign out; an agent signs in and cannot open the program editor.
    b.follow("form[action='/console/sign-out'] button").await;
    assert!(b.path().await.starts_with("/console/sign-in"));
    b.fill("#email", "agent@shop.test").await;
    b.fill("#password", "a long enough password").await;
    b.follow("button[type=submit]").await;
    b.goto(&format!(
        "{base}/console/programs/shop/members/ada-lovelace"
    ))
    .await;
    assert!(
        b.text().await.contains("Adjust points"),
        "agents adjust points"
    );
    assert!(
        !b.text().await.contains("Definition"),
        "no editor in an agent's menu"
    );
    b.goto(&format!("{base}/console/programs/shop/definition"))
        .await;
    assert!(b.text().await.contains("Not allowed"), "{}", b.text().await);
    b.check("console-agent-refused").await;
    b.client.delete_all_cookies().await.unwrap();

    // A member's user cannot use the console.
    b.goto(&format!("{base}/console/sign-in")).await;
    b.fill("#email", "member@shop.test").await;
    b.fill("#password", "a long enough password").await;
    b.follow("button[type=submit]").await;
    assert!(b.text().await.contains("The console is for program staff"));

    // The portal: the one-time link sets a password and signs the member in.
    b.goto(&format!("{base}{link}")).await;
    b.check("portal-set-password").await;
    b.fill("#password", "ada's own password").await;
    b.fill("#password_again", "ada's own password").await;
    b.follow("button[type=submit]").await;
    assert_eq!(b.path().await, "/portal/shop");
    assert_eq!(b.element_text("#balance-points").await, "4,750 points");
    assert!(
        b.client.find(Locator::Css("#expiry-points")).await.is_ok(),
        "the expiry schedule"
    );
    let progress = b
        .client
        .find(Locator::Css("#tier-progress-status"))
        .await
        .unwrap();
    assert_eq!(progress.attr("value").await.unwrap().as_deref(), Some("45"));
    assert!(
        b.text().await.contains("5,500 more to reach gold"),
        "{}",
        b.text().await
    );
    // Points held for a checkout show beside the balance until the hold ends; the badge
    // and the benefit the big purchase earned are listed.
    let (status, body) = server
        .post(
            "/programs/shop/holds",
            json!({"order_id": "till-7", "member": "ada-lovelace", "currency": "points", "points": 100}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.goto(&format!("{base}/portal/shop")).await;
    assert_eq!(b.element_text("#balance-points").await, "4,650 points");
    assert_eq!(
        b.element_text("#held-points").await,
        "100 points reserved for an order or a review"
    );
    // A purchase the fraud rules hold: the member sees it waits for review, not why.
    let (status, body) = server
        .post(
            "/programs/shop/journals",
            json!({"external_id": "rc-3", "member": "ada-lovelace", "type": "purchase",
                   "occurred_at": recent, "amount": "700", "currency": "JPY",
                   "attributes": {"receipt": "R-5501"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    b.goto(&format!("{base}/portal/shop")).await;
    let review = b.element_text("#under-review").await;
    assert!(
        review.contains("Purchase or activity rc-3") && !review.contains("receipt"),
        "{review}"
    );
    assert_eq!(b.element_text("#badges").await, "Big spender");
    assert!(
        b.element_text("#granted-benefits")
            .await
            .starts_with("Lounge pass, until "),
        "{}",
        b.element_text("#granted-benefits").await
    );
    b.check("portal-home").await;
    let (status, body) = server
        .post("/programs/shop/holds/till-7/release", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.goto(&format!("{base}/portal/shop")).await;
    assert!(b.client.find(Locator::Css("#held-points")).await.is_err());
    // In Japanese.
    b.follow("a[lang=ja]").await;
    let text = b.text().await;
    assert!(
        text.contains("4,750 ポイント") && text.contains("ポイントの有効期限"),
        "{text}"
    );
    assert!(text.contains("年"), "dates in Japanese: {text}");
    b.check("portal-home-ja").await;
    b.goto(&format!("{base}/portal/shop/history")).await;
    assert!(
        b.text().await.contains("獲得"),
        "the language is remembered"
    );
    b.check("portal-history-ja").await;
    b.follow("a[lang=en]").await;
    // Join the opt-in promotion.
    b.goto(&format!("{base}/portal/shop/promotions")).await;
    b.check("portal-promotions").await;
    b.follow("#promotion-club button").await;
    assert!(b.text().await.contains("You joined the promotion."));
    assert!(
        b.element_text("#promotion-club")
            .await
            .contains("You have joined.")
    );
    // Rewards: the mug is orderable, the lounge is for Gold members; ordering spends the
    // points and brings the mug's coffee voucher.
    b.goto(&format!("{base}/portal/shop/rewards")).await;
    b.check("portal-rewards").await;
    assert!(
        b.element_text("#item-lounge")
            .await
            .contains("For members of a higher tier")
    );
    assert!(
        b.element_text("#item-mug").await.contains("500 points"),
        "{}",
        b.element_text("#item-mug").await
    );
    b.follow("#item-mug button").await;
    let text = b.text().await;
    assert!(text.contains("Your order is placed"), "{text}");
    assert!(b.element_text("#vouchers").await.contains("Free COFFEE"));
    assert!(b.element_text("#orders").await.contains("Fidelis mug"));
    assert!(b.element_text("#item-mug").await.contains("2 left"));
    b.check("portal-rewards-ordered").await;
    // Missing points: the member files a claim, and sees the agent's decision.
    b.goto(&format!("{base}/portal/shop/claims")).await;
    b.fill("#claim-reference", "RCPT-9").await;
    b.client
        .execute(
            "document.getElementById('claim-date').value = '2026-11-20'",
            vec![],
        )
        .await
        .unwrap();
    b.fill("#claim-amount", "1500").await;
    b.fill("#claim-partner", "Ginza store").await;
    b.follow("form[action$='/claims'] button").await;
    assert!(
        b.text().await.contains("Your claim is filed"),
        "{}",
        b.text().await
    );
    assert!(
        b.element_text("#claim-RCPT-9")
            .await
            .contains("Being checked")
    );
    let queue = server.get("/programs/shop/claims?status=open").await;
    let id = queue["claims"][0]["claim_id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .post(
            &format!("/programs/shop/claims/{id}/reject"),
            json!({"reason": "no such receipt at that store"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    b.goto(&format!("{base}/portal/shop/claims")).await;
    assert!(
        b.element_text("#claim-RCPT-9")
            .await
            .contains("Declined: no such receipt at that store")
    );
    b.check("portal-claims").await;
    // The member cannot reach anyone else's page: the console is not theirs, and the
    // portal serves only their own program and member.
    b.goto(&format!(
        "{base}/console/programs/shop/members/grace-hopper"
    ))
    .await;
    assert!(b.path().await.starts_with("/console/sign-in"));
    assert!(!b.text().await.contains("grace"));
    b.goto(&format!("{base}/portal/other")).await;
    assert!(
        b.path().await.starts_with("/portal/other/sign-in"),
        "{}",
        b.path().await
    );
    // Signing out and in again with the password.
    b.goto(&format!("{base}/portal/shop")).await;
    b.follow("form[action='/portal/shop/sign-out'] button")
        .await;
    assert_eq!(b.path().await, "/portal/shop/sign-in");
    b.check("portal-sign-in").await;
    b.fill("#member", "ada-lovelace").await;
    b.fill("#password", "ada's own password").await;
    b.follow("button[type=submit]").await;
    assert_eq!(b.path().await, "/portal/shop");
    // The link was used: it works no more.
    b.client.delete_all_cookies().await.unwrap();
    b.goto(&format!("{base}{link}")).await;
    assert!(
        b.text().await.contains("expired or was used"),
        "{}",
        b.text().await
    );

    // Every sign-in was audited.
    let audit = server.get("/audit?action=signin").await;
    let actors: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert!(
        actors.contains(&"admin@shop.test") && actors.contains(&"agent@shop.test"),
        "{actors:?}"
    );
    let failed = server.get("/audit?action=signin.failed").await;
    assert!(!failed["entries"].as_array().unwrap().is_empty());
    let portal = server.get("/audit?action=portal.password_set").await;
    assert_eq!(portal["entries"][0]["subject"], "ada-lovelace");

    // Her data: downloaded as one JSON file, then erased once she typed her number.
    b.goto(&format!("{base}/portal/shop/sign-in")).await;
    b.fill("#member", "ada-lovelace").await;
    b.fill("#password", "ada's own password").await;
    b.follow("button[type=submit]").await;
    // Giving points back to the member who just gave her some closes a ring: held for
    // review, the portal says so (not "given") and lists it with the points set aside.
    let (status, body) = server
        .post(
            "/programs/shop/members/mary-somerville/transfers",
            json!({"external_id": "gift-1", "to": "ada-lovelace", "currency": "points", "points": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    b.goto(&format!("{base}/portal/shop")).await;
    b.fill("#transfer-to", "mary-somerville").await;
    b.fill("#transfer-points", "10").await;
    b.follow("section[aria-labelledby=transfer-h] button").await;
    assert!(
        b.text().await.contains("Your transfer is being reviewed"),
        "{}",
        b.text().await
    );
    let review = b.element_text("#under-review").await;
    assert!(
        review.contains("Transfer") && review.contains("10 points set aside"),
        "{review}"
    );
    b.check("portal-under-review").await;
    b.goto(&format!("{base}/portal/shop/data")).await;
    b.click("#consent-email").await;
    b.follow("form[action$='/data/consents'] button").await;
    assert!(
        b.element_text("#data-notice")
            .await
            .contains("Your choices are saved"),
        "{}",
        b.text().await
    );
    let consents = server
        .get("/programs/shop/members/ada-lovelace/consents")
        .await;
    assert_eq!(consents["consents"][0]["channel"], "email", "{consents}");
    assert_eq!(consents["consents"][0]["granted"], true, "{consents}");
    assert_eq!(consents["consents"][0]["source"], "portal", "{consents}");
    b.check("portal-data").await;
    let export = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch(document.getElementById('data-download').href).then(r => r.json()).then(done);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(export["member"], "ada-lovelace", "{export}");
    assert!(
        export["tables"]["journals"]
            .as_array()
            .is_some_and(|j| !j.is_empty()),
        "{export}"
    );
    b.fill("#data-confirm", "ada").await;
    b.follow("form[action$='/data/erase'] button").await;
    assert!(b.text().await.contains("Type your member number exactly"));
    b.fill("#data-confirm", "ada-lovelace").await;
    b.follow("form[action$='/data/erase'] button").await;
    assert!(
        b.text().await.contains("Your personal data was erased"),
        "{}",
        b.text().await
    );
    b.check("portal-data-erased").await;
    let (status, _, _) = server
        .call(
            reqwest::Method::GET,
            "/programs/shop/members/ada-lovelace",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "erased");
    // Her own erasure is audited under her pseudonym, not her old id.
    let audit = server.get("/audit?action=member.erase").await;
    let actor = audit["entries"][0]["actor"].as_str().unwrap_or_default();
    assert!(actor.starts_with("member:erased-"), "{audit}");
    b.goto(&format!("{base}/portal/shop")).await;
    assert!(b.path().await.starts_with("/portal/shop/sign-in"));
    let _ = ADMIN;
    b.client.clone().close().await.unwrap();
}
