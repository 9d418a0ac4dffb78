//! Faults end to end: a real `fidelis serve` whose database fails under it — a SQLite disk
//! that fills up (a real tmpfs), a PostgreSQL that hangs (SIGSTOP) and one stopped with a
//! fast shutdown in the middle of a transaction. Each must answer a problem with a code and
//! `Retry-After` (never a bare status or a 500), say "not ready" within the readiness bound,
//! fail fast while the database is gone, and work again — without a restart — once the
//! database does; every journal retried with its external id is applied exactly once.
//!
//! The tmpfs needs root (as the README's test command and CI run); without it the SQLite
//! test fails saying so.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

mod common;
use common::Server;

/// Asserts an answer is a 503 problem with `code` and a `Retry-After`.
fn assert_unavailable(status: StatusCode, headers: &HeaderMap, body: &Value, code: &str) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
    assert!(
        headers.contains_key("retry-after"),
        "no Retry-After: {body}"
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("external_id"),
        "the detail says how to retry: {detail}"
    );
}

/// A purchase; the same id always gets the same body (a retry must be identical).
fn purchase(id: &str, amount: &str) -> Value {
    static AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339());
    serde_json::json!({"external_id": id, "member": "m", "type": "purchase", "occurred_at": at,
                       "amount": amount, "currency": "EUR"})
}

async fn post_purchase(s: &Server, id: &str, amount: &str) -> (StatusCode, HeaderMap, Value) {
    s.call(
        reqwest::Method::POST,
        "/programs/shop/journals",
        Some(purchase(id, amount)),
    )
    .await
}

/// `/readyz`: its status and how long it took.
async fn readiness(s: &Server) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let response = s
        .http
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .expect("readyz answers");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// While the database is known to be gone: a journal fails at once, and readiness says
/// "not ready" within its bound.
async fn assert_fails_fast_and_not_ready(s: &Server, id: &str, amount: &str) {
    let started = Instant::now();
    let (status, headers, body) = post_purchase(s, id, amount).await;
    assert_unavailable(status, &headers, &body, "database_unavailable");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "failing fast took {:?}",
        started.elapsed()
    );
    let (status, body, took) = readiness(s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        took < Duration::from_millis(2_500),
        "readiness took {took:?}"
    );
}

async fn wait_ready(s: &Server, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if readiness(s).await.0 == StatusCode::OK {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_full_disk_leaves_no_poisoned_connection() {
    let disk = fidelis_testkit::Tmpfs::mount(32 << 20)
        .unwrap_or_else(|e| panic!("this test fills a real disk: {e}"));
    let url = format!("sqlite://{}", disk.path.join("fidelis.db").display());
    let s = Server::start(&url).await;
    s.setup(&["m"]).await;
    let (status, _, body) = post_purchase(&s, "before", "10.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let filler = disk.fill("filler");
    // The log keeps the room it had: once copied into the database (`checkpoint.rs`) it is
    // written again from its start, so journals are accepted until it must grow, and a
    // checkpoint begun after the last commit may still make room once. Three refusals in
    // a row, apart, leave no commit behind to copy: the disk is full for good.
    let mut accepted = 0;
    let mut failed = Vec::new();
    let mut in_a_row = 0;
    for i in 0..2_000 {
        let id = format!("full-{i}");
        let (status, headers, body) = post_purchase(&s, &id, "10.00").await;
        if status == StatusCode::CREATED {
            accepted += 1;
            in_a_row = 0;
            continue;
        }
        assert_unavailable(status, &headers, &body, "storage_unavailable");
        failed.push(id);
        in_a_row += 1;
        if in_a_row == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(in_a_row, 3, "the full disk did not refuse journals");
    let (status, body, took) = readiness(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "not_ready", "{body}");
    assert!(took < Duration::from_secs(3), "readiness took {took:?}");

    std::fs::remove_file(&filler).expect("freeing the disk");
    // Every connection of the pool is used in turn: none may be left poisoned.
    for i in 0..40 {
        let (status, _, body) = post_purchase(&s, &format!("after-{i}"), "1.00").await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "write {i} after freeing: {body}"
        );
    }
    let (status, body, _) = readiness(&s).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The refused journals changed nothing: retried, each is applied once.
    for id in &failed {
        let (status, _, body) = post_purchase(&s, id, "10.00").await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {body}");
        let (status, headers, _) = post_purchase(&s, id, "10.00").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["idempotent-replayed"], "true");
    }
    assert_eq!(
        s.available("m").await,
        10 + 10 * accepted + 40 + 10 * failed.len() as i64
    );
}

/// Waits until `query` (a count) answers at least 1, asking with psql.
async fn wait_for(pg: &fidelis_testkit::PgServer, url: &str, query: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(pg.bindir.join("psql"))
            .args([url, "-tAc", query])
            .output()
            .expect("psql");
        let count: i64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if count >= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "still 0 after 20 s: {query}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dedicated_postgres() -> (fidelis_testkit::PgServer, String) {
    let server = fidelis_testkit::PgServer::start(fidelis_testkit::PgOptions {
        durable: false,
        watchdog: true,
    })
    .unwrap_or_else(|e| panic!("PostgreSQL for this test: {e}"));
    let url = server
        .create_database("faults")
        .unwrap_or_else(|e| panic!("{e}"));
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_that_hangs_times_out_with_a_problem_then_fails_fast() {
    let (pg, url) = dedicated_postgres();
    let s = Server::start_with(&url, &["--request-timeout-secs", "2"]).await;
    s.setup(&["m"]).await;
    let (status, _, body) = post_purchase(&s, "before", "10.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    pg.freeze();
    let started = Instant::now();
    let (status, headers, body) = post_purchase(&s, "hung", "20.00").await;
    let took = started.elapsed();
    assert_unavailable(status, &headers, &body, "timeout");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown"),
        "the outcome is unknown: {body}"
    );
    assert!(took < Duration::from_secs(4), "the timeout took {took:?}");

    let (status, body, took) = readiness(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        took < Duration::from_millis(2_500),
        "readiness took {took:?}"
    );

    // The server now knows the database is gone: requests fail at once.
    assert_fails_fast_and_not_ready(&s, "while-hung", "30.00").await;

    pg.thaw();
    wait_ready(&s, Duration::from_secs(10)).await;
    // The timed-out journal may have committed after its answer: its retry either
    // applies it or replays it, and it counts once.
    let (status, _, body) = post_purchase(&s, "hung", "20.00").await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::OK,
        "{status}: {body}"
    );
    let (status, _, body) = post_purchase(&s, "while-hung", "30.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(s.available("m").await, 10 + 20 + 30);
    pg.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_fast_shutdown_mid_transaction_is_503_and_recovers() {
    let (pg, url) = dedicated_postgres();
    let s = Server::start(&url).await;
    s.setup(&["m"]).await;
    let (status, _, body) = post_purchase(&s, "before", "10.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Another session holds the accounts table, so the next journal's transaction waits
    // inside the database; then the server shuts down fast and cuts it.
    let mut locker = Command::new(pg.bindir.join("psql"))
        .args([url.as_str(), "-c"])
        .arg("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    wait_for(&pg, &url, "SELECT count(*) FROM pg_locks WHERE relation = 'accounts'::regclass AND mode = 'AccessExclusiveLock' AND granted").await;
    let cut = {
        let http = s.http.clone();
        let url = s.url("/programs/shop/journals");
        tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(common::ADMIN)
                .json(&purchase("cut", "20.00"))
                .send()
                .await
                .expect("answered");
            let (status, headers) = (response.status(), response.headers().clone());
            (
                status,
                headers,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };
    // The journal's transaction is waiting for the lock.
    wait_for(
        &pg,
        &url,
        "SELECT count(*) FROM pg_locks WHERE relation = 'accounts'::regclass AND NOT granted",
    )
    .await;
    assert!(
        !cut.is_finished(),
        "the journal should be waiting on the lock"
    );
    let stopped_at = Instant::now();
    pg.shutdown_fast();
    let (status, headers, body) = cut.await.expect("the request task");
    assert_unavailable(status, &headers, &body, "database_unavailable");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(8),
        "the cut journal answered after {:?}",
        stopped_at.elapsed()
    );
    let _ = locker.kill();
    let _ = locker.wait();

    // Known to be down: fail fast, and readiness says so within its bound.
    assert_fails_fast_and_not_ready(&s, "while-down", "30.00").await;

    pg.restart().unwrap_or_else(|e| panic!("{e}"));
    wait_ready(&s, Duration::from_secs(10)).await;
    for (id, amount) in [("cut", "20.00"), ("while-down", "30.00")] {
        let (status, _, body) = post_purchase(&s, id, amount).await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {body}");
    }
    assert_eq!(s.available("m").await, 10 + 20 + 30);
    pg.stop();
}
