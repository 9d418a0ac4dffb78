//! What the end-to-end suites share: a real `fidelis serve` process and a small program.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

pub const ADMIN: &str = "e2e-admin-token-0123456789";

/// A `fidelis serve` process, stopped when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub async fn start(database: &str) -> Self {
        Self::start_with(database, &[]).await
    }

    /// Starts `fidelis serve` with extra arguments for `serve`.
    pub async fn start_with(database: &str, extra: &[&str]) -> Self {
        Self::start_as(database, extra, Some(ADMIN)).await
    }

    /// Starts `fidelis serve` with `FIDELIS_ADMIN_TOKEN` set to `admin`, or unset.
    pub async fn start_as(database: &str, extra: &[&str], admin: Option<&str>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_fidelis"))
            .args([
                "--database",
                database,
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .env_remove("FIDELIS_ADMIN_TOKEN")
            .envs(admin.map(|a| ("FIDELIS_ADMIN_TOKEN", a)))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting fidelis serve");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = server
                .http
                .get(format!("{}/readyz", server.base))
                .send()
                .await
                && r.status() == StatusCode::OK
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "fidelis serve did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request is answered");
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// A call with another bearer token.
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request is answered");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A new token (created by the admin) for `spec` (`name`, `role`, …): its secret.
    pub async fn token(&self, spec: Value) -> String {
        let (status, body) = self.post("/tokens", spec).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.call(reqwest::Method::POST, path, Some(body)).await;
        (status, body)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// A program with points that expire ten days after earning, and members.
    pub async fn setup(&self, members: &[&str]) {
        let (status, _, body) = self
            .call(
                reqwest::Method::PUT,
                "/programs/shop",
                Some(json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                    "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "rolling", "days": 10}}],
                    "earning": {"base": [{"currency": "points", "rate": "1"}], "days_before_enrolment": 3650}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for m in members {
            let (status, body) = self
                .post(
                    "/programs/shop/members",
                    json!({"member": m, "profile": {"name": m}}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }

    pub async fn available(&self, member: &str) -> i64 {
        self.get(&format!("/programs/shop/members/{member}/balances"))
            .await["balances"][0]["available"]
            .as_i64()
            .unwrap()
    }

    pub async fn ledger_len(&self, member: &str) -> usize {
        self.get(&format!("/programs/shop/members/{member}/ledger?limit=500"))
            .await["entries"]
            .as_array()
            .unwrap()
            .len()
    }
}

/// When points earned under Europe/Berlin rules (rolling `days` local days) must be earned
/// to expire exactly at `target`: jobs never run ahead of the clock, so tests of expiry earn
/// in the past and wait the last seconds.
pub fn earned_to_expire_at(
    days: u32,
    target: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    let tz = chrono_tz::Europe::Berlin;
    let mut earned = target - chrono::Duration::days(days.into());
    // Local days are 23 or 25 hours long across a daylight-saving change: correct by the
    // difference (once is enough away from the change's own hour).
    for _ in 0..3 {
        let expires = fidelis_core::calendar::add_days(tz, earned, days);
        if expires == target {
            break;
        }
        earned += target - expires;
    }
    earned
}

pub fn purchase(id: &str, member: &str, amount: &str) -> Value {
    json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": chrono::Utc::now().to_rfc3339(),
           "amount": amount, "currency": "EUR"})
}

/// One test function per dialect: `mod sqlite` on a fresh SQLite file, `mod postgres` on a
/// fresh database of the shared throw-away server; each calls `super::name(url)`.
#[allow(unused_macros)] // the suites with their own runtime flavour define theirs
macro_rules! both_dialects {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = fidelis_testkit::sqlite_db();
                    super::$name(&db.url).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(&fidelis_testkit::pg_url()).await;
                }
            )*
        }
    };
}
