//! The attacks of "trust at the edge", replayed against a real `fidelis serve` on both
//! databases: each test names the item it replays and asserts that the attack is refused,
//! bounded or answered as the contract says — and that nothing changed.

use reqwest::{Method, StatusCode};
use serde_json::json;

mod common;
use common::{Server, purchase};

macro_rules! both_dialects {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = fidelis_testkit::sqlite_db();
                    super::$name(super::Server::start(&db.url).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Server::start(&fidelis_testkit::pg_url()).await).await;
                }
            )*
        }
    };
}

both_dialects!(
    partners_and_narrow_tokens_mint_no_points,
    rights_are_never_escalated,
    metrics_stay_bounded,
    jobs_never_run_ahead_of_the_clock,
    group_points_are_spent_only_by_the_group_rule,
    partners_read_no_balances_through_outcomes,
    identical_retries_replay_without_a_time,
    http_layer_errors_are_problems,
    partners_refund_and_read_their_own_journals,
    what_is_not_valid_is_refused,
    operator_rules_are_bounded,
    cumulative_progress_falls_with_a_refund,
    gold_members_of_the_retail_template_earn_more,
    expiries_are_extended_by_tiers_the_program_and_operators,
    members_move_in_through_the_api,
);

/// Item 13: unknown tokens each cost a database lookup, and each had a rate-limit bucket
/// of its own. Made-up tokens are refused from memory, and share one bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_made_up_tokens_cost_no_database_read_and_share_the_rate_limit() {
    let db = fidelis_testkit::sqlite_db();
    made_up_tokens_cost_no_database_read_and_share_the_rate_limit(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_made_up_tokens_cost_no_database_read_and_share_the_rate_limit() {
    made_up_tokens_cost_no_database_read_and_share_the_rate_limit(&fidelis_testkit::pg_url()).await;
}

/// Renames a table of the database at `url` (SQLite or PostgreSQL).
async fn rename_table(url: &str, from: &str, to: &str) {
    use sqlx::Connection;
    let sql = format!("ALTER TABLE {from} RENAME TO {to}");
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

async fn made_up_tokens_cost_no_database_read_and_share_the_rate_limit(url: &str) {
    let s = Server::start_with(url, &["--rate-limit", "20"]).await;
    let random = |i: usize| format!("made-up-{i}-{}", rand_suffix());
    let (status, _) = s.call_as(&random(0), Method::GET, "/programs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Take the tokens table away: a lookup would now fail (500/503), not answer 401.
    rename_table(url, "api_tokens", "api_tokens_away").await;
    let mut statuses = std::collections::BTreeMap::new();
    for i in 1..=150 {
        let (status, body) = s.call_as(&random(i), Method::GET, "/programs", None).await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
            "{status}: {body}"
        );
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    rename_table(url, "api_tokens_away", "api_tokens").await;
    // 150 made-up tokens at once, a limit of 20 a second with a burst of 40: most are 429.
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 50,
        "{statuses:?}"
    );
    // Real tokens are unaffected.
    let (status, _, _) = s.call(Method::GET, "/programs", None).await;
    assert_eq!(status, StatusCode::OK);
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Item 16: a one-character `FIDELIS_ADMIN_TOKEN` was accepted; the SQLite file was
/// created world-readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_refuses_a_weak_admin_token_and_keeps_its_file_private() {
    let db = fidelis_testkit::sqlite_db();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["--database", &db.url, "serve", "--listen", "127.0.0.1:0"])
        .env("FIDELIS_ADMIN_TOKEN", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 24"), "{stderr}");
    let s = Server::start(&db.url).await;
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.path.display());
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(
                meta.permissions().mode() & 0o077,
                0,
                "{path} is readable by others"
            );
        }
    }
    drop(s);
}

/// Item 11: two 120 MiB batches whose client never read the answer kept ~380 MB resident
/// for 65 s+. The body is read as it is processed, a partner's batch is bounded tighter,
/// and a stalled body or unread answer ends the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_batches_are_streamed_bounded_and_cut_when_stalled() {
    let db = fidelis_testkit::sqlite_db();
    batches_are_streamed_bounded_and_cut_when_stalled(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_batches_are_streamed_bounded_and_cut_when_stalled() {
    batches_are_streamed_bounded_and_cut_when_stalled(&fidelis_testkit::pg_url()).await;
}

async fn batches_are_streamed_bounded_and_cut_when_stalled(url: &str) {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let s = Server::start_with(url, &["--request-timeout-secs", "2"]).await;
    s.setup(&["m"]).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let rss = || {
        std::fs::read_to_string(format!("/proc/{}/status", s.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    // 120 MiB declared, sent as fast as the server takes it, the answer never read.
    let total: usize = 120 << 20;
    let mut client = std::net::TcpStream::connect(&addr).unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        client,
        "POST /api/v1/programs/shop/journals/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {total}\r\n\r\n",
        common::ADMIN
    )
    .unwrap();
    let line = b"{\"not\": \"a journal\"}\n";
    let block: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 50_000)
        .collect();
    let started = Instant::now();
    let (mut sent, mut peak) = (0usize, before);
    let cut = loop {
        if sent >= total {
            break false;
        }
        let n = block.len().min(total - sent);
        match client.write(&block[..n]) {
            Ok(written) => sent += written,
            Err(_) => break true,
        }
        peak = peak.max(rss());
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
    };
    assert!(
        cut,
        "the server kept taking a body nobody read the answer of ({sent} bytes sent)"
    );
    assert!(sent < total, "{sent}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 64 * 1024,
        "the server grew by {grew} kB holding a batch"
    );
    let _ = client.read(&mut [0u8; 16]);
    // The server is still fine.
    assert_eq!(s.available("m").await, 0);
    // A partner's batch is bounded tighter: 17 MiB is refused before it is read.
    let partner = s
        .token(json!({"name": "acme", "role": "partner", "program": "shop", "partner": "acme"}))
        .await;
    let response = reqwest::Client::new()
        .post(s.url("/programs/shop/journals/batch"))
        .bearer_auth(&partner)
        .header("content-type", "application/x-ndjson")
        .body(vec![b'\n'; 17 << 20])
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "body_too_large");
    }
    // A body that stops coming: the lines before are answered, then `body_stalled`.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    let first = purchase("p-slow", "m", "10").to_string() + "\n";
    write!(
        slow,
        "POST /api/v1/programs/shop/journals/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n{first}",
        common::ADMIN
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"processed\""), "{answer}");
    assert!(answer.contains("body_stalled"), "{answer}");
    assert_eq!(
        s.available("m").await,
        10,
        "the line before the stall was committed"
    );
}

/// Item 6 needs its own server limits; one database is enough for what is not about data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_trickling_connections_cannot_exhaust_the_server() {
    let db = fidelis_testkit::sqlite_db();
    let s = Server::start_with(
        &db.url,
        &["--header-timeout-secs", "1", "--max-connections", "40"],
    )
    .await;
    connections_are_bounded(s).await;
}

/// Item 4: `jobs run` with a future `as_of` would expire valid points irreversibly.
async fn jobs_never_run_ahead_of_the_clock(s: Server) {
    s.setup(&["m"]).await;
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p1", "m", "50"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let next_year = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let (status, body) = s
        .post("/programs/shop/jobs/run", json!({"as_of": next_year}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "as_of_in_future");
    assert_eq!(s.available("m").await, 50, "nothing expired");
    // A minute of clock skew between a scheduler and the server is fine.
    let skewed = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    let (status, body) = s
        .post("/programs/shop/jobs/run", json!({"as_of": skewed}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Item 8: a partner or agent spent a household's points through the member routes,
/// bypassing the group's `redeem` rule.
async fn group_points_are_spent_only_by_the_group_rule(s: Server) {
    s.setup(&["owner", "kid"]).await;
    let (status, body) = s
        .post(
            "/programs/shop/groups",
            json!({"group": "home", "name": "Home", "share_percent": 100, "redeem": "owner", "owner": "owner"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post(
            "/programs/shop/groups/home/members",
            json!({"member": "kid"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p1", "kid", "80"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        s.available("home").await,
        80,
        "the kid's points went to the group"
    );
    let agent = s
        .token(json!({"name": "desk", "role": "agent", "program": "shop"}))
        .await;
    let partner = s
        .token(json!({"name": "shop-partner", "role": "partner", "program": "shop", "partner": "acme"}))
        .await;
    let spend = |id: &str| json!({"external_id": id, "currency": "points", "points": 10});
    for (token, id) in [(&agent, "r-agent"), (&partner, "r-partner")] {
        let (status, body) = s
            .call_as(
                token,
                Method::POST,
                "/programs/shop/members/home/redemptions",
                Some(spend(id)),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "member_is_group", "{body}");
    }
    // Nor through the journals routes, realtime or batch.
    let (status, body) = s
        .post(
            "/programs/shop/journals",
            json!({"external_id": "r-journal", "member": "home", "type": "redemption",
                   "occurred_at": chrono::Utc::now().to_rfc3339(), "currency": "points", "points": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "member_is_group", "{body}");
    let line = json!({"external_id": "r-batch", "member": "home", "type": "redemption",
                      "occurred_at": chrono::Utc::now().to_rfc3339(), "currency": "points", "points": 10});
    let answer = s
        .http
        .post(s.url("/programs/shop/journals/batch"))
        .bearer_auth(common::ADMIN)
        .header("content-type", "application/x-ndjson")
        .body(format!("{line}\n"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(answer.contains("member_is_group"), "{answer}");
    assert_eq!(s.available("home").await, 80, "nothing was spent");
    // The group's own route applies its rule: the kid may not, the owner may.
    let (status, body) = s
        .post(
            "/programs/shop/groups/home/redemptions",
            json!({"external_id": "g1", "member": "kid", "currency": "points", "points": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "not_allowed_by_group");
    let (status, body) = s
        .post(
            "/programs/shop/groups/home/redemptions",
            json!({"external_id": "g2", "member": "owner", "currency": "points", "points": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(s.available("home").await, 70);
    // The group lists its members, not itself.
    let group = s.get("/programs/shop/groups/home").await;
    assert_eq!(group["members"], json!(["kid", "owner"]), "{group}");
}

/// Item 9: partners read balances through `/simulate` and through the outcomes of their
/// redemptions and zero-amount purchases, though every member read route refuses them.
async fn partners_read_no_balances_through_outcomes(s: Server) {
    s.setup(&["m"]).await;
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p0", "m", "500"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let partner = s
        .token(json!({"name": "acme", "role": "partner", "program": "shop", "partner": "acme"}))
        .await;
    let (status, _) = s
        .call_as(
            &partner,
            Method::GET,
            "/programs/shop/members/m/balances",
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the read route is closed to partners"
    );
    let leaks = |body: &serde_json::Value| {
        let text = body.to_string();
        !body["balances"].as_array().is_some_and(Vec::is_empty) || text.contains("500")
    };
    let zero = purchase("p-zero", "m", "0");
    for path in ["/programs/shop/simulate", "/programs/shop/journals"] {
        let (status, body) = s
            .call_as(&partner, Method::POST, path, Some(zero.clone()))
            .await;
        assert!(status.is_success(), "{path}: {body}");
        assert!(!leaks(&body), "{path} shows the balance: {body}");
    }
    let (status, body) = s
        .call_as(
            &partner,
            Method::POST,
            "/programs/shop/members/m/redemptions",
            Some(json!({"external_id": "r1", "currency": "points", "points": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!leaks(&body), "the redemption shows the balance: {body}");
    assert_eq!(
        body["debited"][0]["points"], 10,
        "what the journal did is shown: {body}"
    );
    // Asking for too much says so, not how much there is (490 are left).
    let (status, body) = s
        .call_as(
            &partner,
            Method::POST,
            "/programs/shop/members/m/redemptions",
            Some(json!({"external_id": "r2", "currency": "points", "points": 100000})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "insufficient_points");
    assert!(!body.to_string().contains("490"), "{body}");
    // Simulating what the partner may not post is refused like posting it.
    let (status, body) = s
        .call_as(
            &partner,
            Method::POST,
            "/programs/shop/simulate",
            Some(json!({"external_id": "a1", "member": "m", "type": "adjustment", "occurred_at": chrono::Utc::now().to_rfc3339(),
                        "currency": "points", "points": 1000, "reason": "goodwill"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // An agent still sees the balance.
    let (_, body) = s
        .post("/programs/shop/simulate", purchase("p-agent", "m", "0"))
        .await;
    assert_eq!(body["balances"][0]["available"], 490, "{body}");
}

/// Item 10: the same redemption, adjustment or cancel sent twice without `occurred_at` got
/// 409 (the server filled the time in, then compared); 9 of 10 parallel identical cancels
/// got 409. A retried identical request replays the first outcome.
async fn identical_retries_replay_without_a_time(s: Server) {
    s.setup(&["m"]).await;
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p1", "m", "300"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for (path, body) in [
        (
            "/programs/shop/members/m/redemptions",
            json!({"external_id": "r1", "currency": "points", "points": 40}),
        ),
        (
            "/programs/shop/members/m/adjustments",
            json!({"external_id": "a1", "currency": "points", "points": 5, "reason": "goodwill"}),
        ),
        (
            "/programs/shop/journals",
            json!({"external_id": "x1", "member": "m", "type": "redemption", "currency": "points", "points": 1}),
        ),
    ] {
        let (first, one) = s.post(path, body.clone()).await;
        assert_eq!(first, StatusCode::CREATED, "{path}: {one}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (again, two) = s.post(path, body.clone()).await;
        assert_eq!(again, StatusCode::OK, "{path}: a retry replays: {two}");
        assert_eq!(one["debited"], two["debited"]);
        // The same id for something else is still a conflict.
        let mut other = body.clone();
        other["points"] = json!(2);
        let (status, three) = s.post(path, other).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {three}");
        assert_eq!(three["code"], "idempotency_conflict");
    }
    assert_eq!(s.available("m").await, 300 - 40 + 5 - 1);
    // Ten identical cancels at once: one cancels, nine replay it.
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p2", "m", "100"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let cancels = (0..10).map(|_| s.post("/programs/shop/journals/p2/cancel", json!({})));
    let answers = futures::future::join_all(cancels).await;
    let created = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::CREATED)
        .count();
    let replayed = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::OK)
        .count();
    assert_eq!((created, replayed), (1, 9), "{answers:?}");
    assert_eq!(s.available("m").await, 300 - 40 + 5 - 1);
}

fn is_problem(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"application/problem+json"))
}

/// Item 15: errors from the HTTP layer (413, 400 "Invalid URL", 405, 414, 431) were
/// `text/plain` or empty. Every error is problem+json with a `code`.
async fn http_layer_errors_are_problems(s: Server) {
    s.setup(&["m"]).await;
    let huge = format!(
        r#"{{"external_id": "big", "member": "m", "type": "purchase", "currency": "EUR", "amount": "1", "x": "{}"}}"#,
        "a".repeat(2 << 20)
    );
    let long_query = format!(
        "/programs/shop/members/m/ledger?cursor={}",
        "c".repeat(10_000)
    );
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            // Its own client: the server closes a connection whose body it did not read.
            reqwest::Client::new()
                .post(s.url("/programs/shop/journals"))
                .header("content-type", "application/json")
                .body(huge),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            s.http.get(s.url("/programs/shop/members/%FF%FE")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.http.delete(s.url("/programs")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            s.http.get(s.url(&long_query)),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
        ),
        (
            (0..150).fold(s.http.get(s.url("/programs")), |r, i| {
                r.header(format!("x-h{i}"), "v")
            }),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.bearer_auth(common::ADMIN).send().await.unwrap();
        let headers = response.headers().clone();
        let got = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(got, status, "{code}: {body}");
        assert!(is_problem(&headers), "{code}: {headers:?}");
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status.as_u16(), "{body}");
        assert!(
            !body["detail"].as_str().unwrap_or_default().is_empty(),
            "{body}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(headers.contains_key("allow"), "{headers:?}");
        }
    }
}

/// How many file descriptors the server process holds.
fn descriptors(s: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", s.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Item 6: ~20,000 idle TCP connections reached the descriptor limit and `/healthz`
/// stopped answering; a head trickled a byte every 4 s held a connection for 75 s+.
async fn connections_are_bounded(s: Server) {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_owned();
    let before = descriptors(&s);
    // Three hundred connections that never send a byte (the cap is 40).
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = descriptors(&s);
    assert!(
        held <= before + 45,
        "{held} descriptors held (from {before}); the cap is 40"
    );
    // Health still answers, at once.
    let started = Instant::now();
    let health = s
        .http
        .get(format!("{}/healthz", s.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("healthz answers among idle connections");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The idle ones are closed by the head timeout (one second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for mut c in idle {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(50), c.read(&mut buf)).await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "every idle connection was closed");
    // A head trickled a byte at a time is cut at the head timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await
        {
            // A bare close (0) or a 408: either way the server let go.
            assert!(
                n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
            cut = true;
            break;
        }
    }
    assert!(cut, "the trickled head was never cut");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A kept-alive connection that goes quiet after a request is closed too.
    let mut quiet = tokio::net::TcpStream::connect(&addr).await.unwrap();
    quiet
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = quiet.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let n = tokio::time::timeout(Duration::from_secs(3), quiet.read(&mut buf))
        .await
        .expect("the quiet connection is closed within the head timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// Item 14: partners could not refund or read their own journals (the server-filled
/// `partner` made refund parsing fail; redemptions did not store `partner`).
async fn partners_refund_and_read_their_own_journals(s: Server) {
    s.setup(&["m"]).await;
    let acme = s
        .token(json!({"name": "acme", "role": "partner", "program": "shop", "partner": "acme"}))
        .await;
    let other = s
        .token(json!({"name": "other", "role": "partner", "program": "shop", "partner": "other"}))
        .await;
    let post = |token: &str, body: serde_json::Value| {
        let token = token.to_owned();
        let s = &s;
        async move {
            s.call_as(&token, Method::POST, "/programs/shop/journals", Some(body))
                .await
        }
    };
    let (status, body) = post(&acme, purchase("p1", "m", "100")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let refund = json!({"external_id": "f1", "member": "m", "type": "refund", "original_external_id": "p1",
                        "amount": "30", "currency": "EUR"});
    let (status, body) = post(&other, refund.clone()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "another partner's purchase: {body}"
    );
    let (status, body) = post(&acme, refund).await;
    assert_eq!(status, StatusCode::CREATED, "its own purchase: {body}");
    let (status, body) = s
        .call_as(
            &acme,
            Method::POST,
            "/programs/shop/members/m/redemptions",
            Some(json!({"external_id": "r1", "currency": "points", "points": 20})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for id in ["p1", "f1", "r1"] {
        let path = format!("/programs/shop/journals/{id}");
        let (status, body) = s.call_as(&acme, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{id}: {body}");
        let (status, _) = s.call_as(&other, Method::GET, &path, None).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{id} is not the other partner's"
        );
    }
    let journal = s.get("/programs/shop/journals/r1").await;
    assert_eq!(journal["document"]["partner"], "acme", "{journal}");
    // Its own redemption it may cancel; the other partner may not.
    let cancel = json!({"external_id": "c1", "member": "m", "type": "cancellation", "original_external_id": "r1"});
    let (status, _) = post(&other, cancel.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = post(&acme, cancel).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(s.available("m").await, 70);
}

/// Item 16: validation gaps — each refused with a clear problem, nothing changed.
async fn what_is_not_valid_is_refused(s: Server) {
    s.setup(&["a", "b"]).await;
    let user = |email: &str, password: &str| json!({"email": email, "password": password, "role": "agent", "program": "shop"});
    for (body, what) in [
        (
            user("ada@example.com", "            "),
            "a password of spaces",
        ),
        (
            user("ada@example.com", "aaaaaaaaaaaaaa"),
            "one character repeated",
        ),
        (user("@", "correct horse battery"), "email @"),
        (user("ada@", "correct horse battery"), "no domain"),
        (
            json!({"email": "x@example.com", "password": "correct horse battery", "role": "agent", "program": "nope"}),
            "no such program",
        ),
    ] {
        let (status, body) = s.post("/users", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    }
    let (status, body) = s
        .post("/users", user("Ada@Example.com", "correct horse battery"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post("/users", user("ada@example.COM", "correct horse battery"))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the same address in another case: {body}"
    );
    for (body, what) in [
        (json!({"name": "a\u{0}b", "role": "agent"}), "NUL in a name"),
        (
            json!({"name": "a\nb", "role": "agent"}),
            "newline in a name",
        ),
        (
            json!({"name": "t", "role": "agent", "program": "nope"}),
            "no such program",
        ),
        (
            json!({"name": "t", "role": "member", "program": "shop", "member": "nobody"}),
            "no such member",
        ),
    ] {
        let (status, body) = s.post("/tokens", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    }
    // Journals dated year 0, or before the program began.
    let mut ancient = purchase("old", "a", "10");
    ancient["occurred_at"] = json!("0000-01-01T00:00:00Z");
    let (status, body) = s.post("/programs/shop/journals", ancient).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let program = s.get("/programs/shop").await;
    let mut started = program.clone();
    started["starts_on"] = json!("2026-01-01");
    let (status, _, body) = s.call(Method::PUT, "/programs/shop", Some(started)).await;
    assert!(status.is_success(), "{body}");
    let mut before = purchase("before", "a", "10");
    before["occurred_at"] = json!("2025-12-31T12:00:00+01:00");
    let (status, body) = s.post("/programs/shop/journals", before).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("before the program began"),
        "{body}"
    );
    // 30 February is refused, not moved.
    let mut february = program.clone();
    february["currencies"][0]["expiry"] = json!({"policy": "fixed_date", "month": 2, "day": 30});
    let (status, _, body) = s.call(Method::PUT, "/programs/shop", Some(february)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("has no day 30"), "{body}");
    // A merged member stays closed.
    let (status, body) = s
        .post("/programs/shop/members/a/merge", json!({"into": "b"}))
        .await;
    assert!(status.is_success(), "{body}");
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/shop/members/a/status",
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "member_merged");
    // Details name things as written, never as Rust values.
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p1", "b", "10"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = s
        .post(
            "/programs/shop/members/b/redemptions",
            json!({"external_id": "r1", "currency": "points", "points": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post(
            "/programs/shop/journals",
            json!({"external_id": "f1", "member": "b", "type": "refund", "original_external_id": "r1", "amount": "1", "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"r1\"") && !detail.contains("ExternalId"),
        "{detail}"
    );
}

/// Item 5: three nested comprehensions (written `.exists (`, which a text match missed)
/// over a 280-line journal ran 30 s holding the write lock; another program's journal
/// waited 29.5 s. Nesting is counted on the parsed tree, and every evaluation has a cost
/// bound checked before it runs.
async fn operator_rules_are_bounded(s: Server) {
    s.setup(&["m"]).await;
    let program = |code: &str, condition: &str| {
        json!({"name": code, "time_zone": "Europe/Berlin", "money_currency": "EUR",
               "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
               "earning": {"base": [{"currency": "points", "rate": "1"}]},
               "promotions": [{"code": "pairs", "name": "Pairs", "status": "active", "scope": "journal",
                               "condition": condition,
                               "actions": [{"type": "fixed", "currency": "points", "points": 5}]}]})
    };
    let three = "journal.lines.exists (a, journal.lines.exists (b, journal.lines.exists (c, a.sku == b.sku && b.sku == c.sku)))";
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/rules",
            Some(program("rules", three)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("3 deep"), "{body}");
    let two = "journal.lines.exists(a, journal.lines.exists(b, a.sku == b.sku && a.line_id != b.line_id))";
    let (status, _, body) = s
        .call(Method::PUT, "/programs/rules", Some(program("rules", two)))
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = s
        .post("/programs/rules/members", json!({"member": "m"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let lines: Vec<serde_json::Value> = (0..280)
        .map(|i| json!({"line_id": i.to_string(), "sku": format!("S{i}"), "quantity": 1, "amount": "1.00"}))
        .collect();
    let mut big = purchase("big", "m", "280.00");
    big["lines"] = json!(lines);
    // Another program's journal, posted while the big one is processed, is not held up.
    let started = std::time::Instant::now();
    let (hostile, other) = tokio::join!(s.post("/programs/rules/journals", big), async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let at = std::time::Instant::now();
        let answer = s
            .post("/programs/shop/journals", purchase("p-other", "m", "10"))
            .await;
        (answer, at.elapsed())
    });
    let (status, body) = hostile;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["promotions"][0]["result"], "evaluation_error",
        "{body}"
    );
    assert!(
        body["promotions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not evaluated"),
        "{body}"
    );
    assert_eq!(
        body["awards"][0]["points"], 280,
        "base points still earned: {body}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let ((status, _), waited) = other;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        waited < std::time::Duration::from_secs(2),
        "another program waited {waited:?}"
    );
    // A small journal is evaluated as usual: two lines with the same sku earn the bonus.
    let mut small = purchase("small", "m", "2.00");
    small["lines"] = json!([{"line_id": "1", "sku": "X", "quantity": 1, "amount": "1.00"},
                            {"line_id": "2", "sku": "X", "quantity": 1, "amount": "1.00"}]);
    let (status, body) = s.post("/programs/rules/journals", small).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["promotions"][0]["result"], "applied", "{body}");
}

/// Item 20: buy 300, refund 300, buy 200 fired the "spend 500" bonus.
async fn cumulative_progress_falls_with_a_refund(s: Server) {
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/shop",
            Some(json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}]},
                "promotions": [{"code": "spend-500", "name": "Spend 500", "status": "active",
                                "cumulative": {"measure": "amount", "target": "500.00"},
                                "actions": [{"type": "fixed", "currency": "points", "points": 1000}]}]})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, _) = s
        .post("/programs/shop/members", json!({"member": "m"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p1", "m", "300"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = s
        .post(
            "/programs/shop/journals",
            json!({"external_id": "f1", "member": "m", "type": "refund", "original_external_id": "p1", "amount": "300", "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post("/programs/shop/journals", purchase("p2", "m", "200"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["promotions"][0]["result"], "in_progress", "{body}");
    assert_eq!(
        body["promotions"][0]["detail"], "200.00 of 500.00",
        "{body}"
    );
    assert_eq!(s.available("m").await, 200, "no bonus");
}

/// Item 21: the retail template's Gold `earning_multiplier` benefit changed nothing.
async fn gold_members_of_the_retail_template_earn_more(s: Server) {
    let (status, body) = s
        .post("/programs/retail/from-template/retail", json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    let (status, _) = s
        .post(
            "/programs/retail/members",
            json!({"member": "g", "enrolled_at": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // A Wednesday, so no weekend bonus.
    let buy = |id: &str, amount: &str| {
        json!({"external_id": id, "member": "g", "type": "purchase", "occurred_at": "2026-06-10T12:00:00+02:00",
               "amount": amount, "currency": "EUR"})
    };
    let (status, body) = s.post("/programs/retail/journals", buy("p1", "2000")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s.post("/programs/retail/journals", buy("p2", "100")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let extra: i64 = body["awards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["source"] == "tier-multiplier")
        .map(|a| a["points"].as_i64().unwrap())
        .sum();
    assert_eq!(extra, 25, "{body}");
}

/// Item 18: a tier's `expiry_extension` was ignored for `inactivity` currencies; there was
/// no program-wide extension, nor an operator action extending points already earned.
async fn expiries_are_extended_by_tiers_the_program_and_operators(s: Server) {
    let program = |currencies: serde_json::Value, extension: serde_json::Value| {
        json!({"name": "Club", "time_zone": "Europe/Berlin", "money_currency": "EUR",
               "expiry_extension": extension,
               "currencies": currencies,
               "earning": {"base": [{"currency": "points", "rate": "1"}]},
               "tier_groups": [{"code": "status", "measure": "spend", "tiers": [
                   {"code": "member", "threshold": 0},
                   {"code": "gold", "threshold": 1000000, "expiry_extension": {"months": 6}}]}]})
    };
    let put = |path: &'static str, doc: serde_json::Value| {
        let s = &s;
        async move {
            let (status, _, body) = s.call(Method::PUT, path, Some(doc)).await;
            assert!(status.is_success(), "{body}");
        }
    };
    let expiring = |body: &serde_json::Value| -> Vec<String> {
        body["balances"][0]["expiring"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["at"].as_str().unwrap().to_owned())
            .collect()
    };
    // An inactivity currency: Gold's six months lengthen the one-month window.
    let idle = json!([{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "inactivity", "months": 1}}]);
    put(
        "/programs/idle",
        program(idle.clone(), serde_json::Value::Null),
    )
    .await;
    for m in ["gold", "plain"] {
        let (status, _) = s.post("/programs/idle/members", json!({"member": m})).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/idle/members/gold/tiers/status",
            Some(json!({"tier": "gold", "reason": "vip"})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    for m in ["gold", "plain"] {
        let mut p = purchase(&format!("i-{m}"), m, "40");
        p["occurred_at"] = json!(chrono::Utc::now().to_rfc3339());
        let (status, body) = s.post("/programs/idle/journals", p).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let later = (chrono::Utc::now() + chrono::Duration::days(70))
        .to_rfc3339()
        .replace('+', "%2B");
    let gold = s
        .get(&format!(
            "/programs/idle/members/gold/balances?as_of={later}"
        ))
        .await;
    let plain = s
        .get(&format!(
            "/programs/idle/members/plain/balances?as_of={later}"
        ))
        .await;
    assert_eq!(
        gold["balances"][0]["available"], 40,
        "Gold's window is seven months: {gold}"
    );
    assert_eq!(plain["balances"][0]["available"], 0, "{plain}");
    // The program-wide extension: every member's points expire two months later.
    let rolling = json!([{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "rolling", "days": 10}}]);
    put(
        "/programs/wide",
        program(rolling.clone(), json!({"months": 2})),
    )
    .await;
    let (status, _) = s
        .post("/programs/wide/members", json!({"member": "m"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = s
        .post("/programs/wide/journals", purchase("w1", "m", "10"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let body = s.get("/programs/wide/members/m/balances").await;
    let at = chrono::DateTime::parse_from_rfc3339(&expiring(&body)[0]).unwrap();
    let days = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!(
        (68..=72).contains(&days),
        "10 days and two months: {days} ({body})"
    );
    // An operator extends what is already earned: every bucket expiring in a window.
    put("/programs/ops", program(rolling, serde_json::Value::Null)).await;
    for m in ["a", "b"] {
        let (status, _) = s.post("/programs/ops/members", json!({"member": m})).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = s
            .post(
                "/programs/ops/journals",
                purchase(&format!("o-{m}"), m, "25"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let before = expiring(&s.get("/programs/ops/members/a/balances").await);
    let request = json!({"external_id": "covid", "currency": "points",
        "expiring_from": chrono::Utc::now().to_rfc3339(),
        "expiring_until": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
        "months": 3, "reason": "stores closed"});
    let (status, body) = s
        .post("/programs/ops/expiry-extensions", request.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (
            body["members"].as_i64(),
            body["buckets"].as_i64(),
            body["points"].as_i64()
        ),
        (Some(2), Some(2), Some(50)),
        "{body}"
    );
    let after = expiring(&s.get("/programs/ops/members/a/balances").await);
    let (was, is) = (
        chrono::DateTime::parse_from_rfc3339(&before[0]).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&after[0]).unwrap(),
    );
    assert!(
        (is - was).num_days() >= 89 && (is - was).num_days() <= 92,
        "{before:?} -> {after:?}"
    );
    let (status, body) = s
        .post("/programs/ops/expiry-extensions", request.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "a replay: {body}");
    assert_eq!(body["replayed"], true);
    assert_eq!(
        expiring(&s.get("/programs/ops/members/a/balances").await),
        after,
        "not extended twice"
    );
    let mut other = request.clone();
    other["months"] = json!(4);
    let (status, body) = s.post("/programs/ops/expiry-extensions", other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let audit = s.get("/audit?program=ops&action=expiry.extend").await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
    let mut on_idle = request;
    on_idle["external_id"] = json!("idle-ext");
    let (status, body) = s.post("/programs/idle/expiry-extensions", on_idle).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "not_extendable");
}

/// Item 23, through the API: opening balances as an NDJSON batch, once per member.
async fn members_move_in_through_the_api(s: Server) {
    s.setup(&[]).await;
    let earned = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    let line = json!({"member": "moved", "balances": [{"currency": "points", "points": 70, "earned_at": earned}]});
    let post = || {
        s.http
            .post(s.url("/programs/shop/members/openings"))
            .bearer_auth(common::ADMIN)
            .header("content-type", "application/x-ndjson")
            .body(format!("{line}\n{{\"member\": 1}}\n"))
            .send()
    };
    let text = post().await.unwrap().text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["status"], "opened", "{text}");
    assert_eq!(lines[1]["status"], "rejected", "{text}");
    assert_eq!(lines[1]["line"], 2);
    assert_eq!(s.available("moved").await, 70);
    let text = post().await.unwrap().text().await.unwrap();
    assert!(
        text.lines().next().unwrap().contains("\"replayed\""),
        "{text}"
    );
    assert_eq!(s.available("moved").await, 70, "once");
    let audit = s.get("/audit?program=shop&action=member.opening").await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
}

/// Item 1: a partner token (or one narrowed to `journals:write`) minted points with an
/// `adjustment` journal, and cancelled another partner's purchase.
async fn partners_and_narrow_tokens_mint_no_points(s: Server) {
    s.setup(&["m"]).await;
    let acme = s
        .token(json!({"name": "acme", "role": "partner", "program": "shop", "partner": "acme"}))
        .await;
    let narrow = s
        .token(json!({"name": "pos", "role": "program_manager", "program": "shop", "scopes": ["journals:write"]}))
        .await;
    let (status, _) = s
        .post("/programs/shop/journals", purchase("other", "m", "10"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let adjustment = json!({"external_id": "mint", "member": "m", "type": "adjustment", "occurred_at": chrono::Utc::now().to_rfc3339(),
                            "currency": "points", "points": 500000, "reason": "free"});
    for token in [&acme, &narrow] {
        let (status, body) = s
            .call_as(
                token,
                Method::POST,
                "/programs/shop/journals",
                Some(adjustment.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let answer = s
            .http
            .post(s.url("/programs/shop/journals/batch"))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(format!("{adjustment}\n"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            answer.contains("\"rejected\"") && answer.contains("forbidden"),
            "{answer}"
        );
    }
    let cancel = json!({"external_id": "c-other", "member": "m", "type": "cancellation", "original_external_id": "other"});
    let (status, body) = s
        .call_as(&acme, Method::POST, "/programs/shop/journals", Some(cancel))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        s.available("m").await,
        10,
        "nothing minted, nothing cancelled"
    );
}

/// Items 2 and 3: a program-limited token created an unlimited admin token and listed
/// every program's tokens; a second token named like the bootstrap one could not be
/// revoked.
async fn rights_are_never_escalated(s: Server) {
    s.setup(&[]).await;
    let manager = s
        .token(json!({"name": "shop-admin", "role": "admin", "program": "shop"}))
        .await;
    for spec in [
        json!({"name": "root", "role": "admin"}),
        json!({"name": "wide", "role": "program_manager"}),
        json!({"name": "elsewhere", "role": "agent", "program": "other"}),
    ] {
        let (status, body) = s
            .call_as(&manager, Method::POST, "/tokens", Some(spec.clone()))
            .await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{spec}: {status} {body}"
        );
    }
    let (status, body) = s
        .call_as(&manager, Method::POST, "/users", Some(json!({"email": "boss@example.com", "password": "correct horse battery", "role": "admin"})))
        .await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{body}"
    );
    let (status, body) = s.call_as(&manager, Method::GET, "/tokens", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .all(|t| t["program"] == "shop"),
        "only its program's tokens: {body}"
    );
    let (status, body) = s
        .post(
            "/tokens",
            json!({"name": "bootstrap-admin", "role": "agent"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the name is reserved: {body}"
    );
}

/// Item 7: unauthenticated requests with invented methods added a metrics series each.
async fn metrics_stay_bounded(s: Server) {
    let metrics = || async {
        s.http
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    metrics().await;
    let before = metrics()
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        let _ = s
            .http
            .request(method, s.url(&format!("/programs/x{i}")))
            .send()
            .await;
    }
    let after = metrics().await;
    let once = after.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        once - before <= 20,
        "one series (with its histogram), not one per method:\n{after}"
    );
    assert!(
        !after.contains("M7X"),
        "an invented method is a label value"
    );
    // Fifty more invented methods add nothing more.
    for i in 50..100 {
        let method = reqwest::Method::from_bytes(format!("M{i}X").as_bytes()).unwrap();
        let _ = s
            .http
            .request(method, s.url(&format!("/programs/x{i}")))
            .send()
            .await;
    }
    let again = metrics()
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert_eq!(again, once, "bounded");
}
