//! Several `fidelis serve` processes on one PostgreSQL, no balancer: the client alternates
//! between them. What a client notices must not depend on which server answers — one
//! ledger, exact limits, a program change and a revoked token seen everywhere, the jobs on
//! one server at a time — and a server killed in the middle of the jobs leaves nothing half
//! done. (SQLite is one file for one server: several servers is PostgreSQL's.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;
use common::{Server, purchase};

/// Two servers on a fresh database of the shared throw-away PostgreSQL.
async fn two_servers(extra: &[&str]) -> (String, Server, Server) {
    let db = fidelis_testkit::pg_url();
    let a = Server::start_with(&db, extra).await;
    let b = Server::start_with(&db, extra).await;
    (db, a, b)
}

async fn put_program(server: &Server, code: &str, definition: Value) {
    let (status, _, body) = server
        .call(Method::PUT, &format!("/programs/{code}"), Some(definition))
        .await;
    assert!(status.is_success(), "{body}");
}

async fn enroll(server: &Server, program: &str, member: &str) {
    let (status, body) = server
        .post(
            &format!("/programs/{program}/members"),
            json!({"member": member}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn vault(rate: &str) -> Value {
    json!({"name": "Vault", "time_zone": "Europe/Berlin", "money_currency": "EUR",
           "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
           "earning": {"base": [{"currency": "points", "rate": rate}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_keep_one_exact_ledger() {
    let (_db, a, b) = two_servers(&[]).await;
    let nodes = [&a, &b];

    // Promotion limits count across servers: a budget of 100 (awards of 30) and a daily
    // cap of 50 (awards of 20), 24 purchases at once, alternating servers.
    put_program(
        &a,
        "shop",
        json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
               "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
               "earning": {"base": [{"currency": "points", "rate": "1"}]},
               "promotions": [
                 {"code": "budgeted", "name": "Budget of 100", "status": "active",
                  "limits": {"budget_points": 100},
                  "actions": [{"type": "fixed", "currency": "points", "points": 30}]},
                 {"code": "daily", "name": "Capped daily", "status": "active",
                  "limits": {"daily_points": 50},
                  "actions": [{"type": "fixed", "currency": "points", "points": 20}]}]}),
    )
    .await;
    for i in 0..12 {
        enroll(nodes[i % 2], "shop", &format!("m{i}")).await;
    }
    let mut tasks = Vec::new();
    for i in 0..24 {
        let node = nodes[i % 2];
        let body = purchase(&format!("c{i}"), &format!("m{}", i % 12), "1");
        tasks.push(async move { node.post("/programs/shop/journals", body).await });
    }
    let mut awarded: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (status, body) in futures::future::join_all(tasks).await {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for award in body["awards"].as_array().unwrap() {
            awarded
                .entry(award["source"].as_str().unwrap().to_owned())
                .or_default()
                .push(award["points"].as_i64().unwrap());
        }
    }
    for v in awarded.values_mut() {
        v.sort_unstable();
    }
    assert_eq!(awarded["budgeted"], [10, 30, 30, 30], "exactly the budget");
    assert_eq!(awarded["daily"], [10, 20, 20], "exactly the daily cap");

    // Redemptions across servers never overdraw: 5 members with 100 points each, 20
    // redemptions of 10 each at once, half on each server.
    put_program(&b, "vault", vault("1")).await;
    for i in 0..5 {
        let member = format!("v{i}");
        enroll(nodes[i % 2], "vault", &member).await;
        let (status, body) = nodes[(i + 1) % 2]
            .post(
                "/programs/vault/journals",
                purchase(&format!("e{i}"), &member, "100"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut tasks = Vec::new();
    for i in 0..5 {
        for k in 0..20 {
            let node = nodes[k % 2];
            let path = format!("/programs/vault/members/v{i}/redemptions");
            let body =
                json!({"external_id": format!("r{i}-{k}"), "currency": "points", "points": 10});
            tasks.push(async move { (i, node.post(&path, body).await) });
        }
    }
    let mut spent = [0; 5];
    for (i, (status, body)) in futures::future::join_all(tasks).await {
        match status {
            StatusCode::CREATED => spent[i] += 1,
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(body["code"], "insufficient_points", "{body}")
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(
        spent, [10; 5],
        "each member's 100 points spent once, no more"
    );
    for i in 0..5 {
        for node in nodes {
            let balances = node
                .get(&format!("/programs/vault/members/v{i}/balances"))
                .await;
            assert_eq!(balances["balances"][0]["available"], 0);
        }
    }

    // A program changed on one server earns by the new rules on the other at once.
    put_program(&a, "vault", vault("2")).await;
    let (status, body) = b
        .post(
            "/programs/vault/journals",
            purchase("after-change", "v0", "10"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["awards"][0]["points"], 20, "{body}");

    // A token revoked on one server stops working on the other within the token cache's
    // five seconds (README: "a revoked token stops working everywhere within 5 s").
    let token = a
        .token(json!({"name": "till", "role": "program_manager", "program": "vault"}))
        .await;
    let id = {
        let (status, _, list) = a.call(Method::GET, "/tokens", None).await;
        assert_eq!(status, StatusCode::OK);
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "till")
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let read = |node: &Server| {
        let token = token.clone();
        let url = node.url("/programs/vault/members/v1/balances");
        let http = node.http.clone();
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // A token made on one server works on the other within the same five seconds.
    let made = Instant::now();
    while read(&b).await != StatusCode::OK {
        assert!(
            made.elapsed() < Duration::from_millis(6500),
            "the new token is not known to b"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, body) = a.call(Method::DELETE, &format!("/tokens/{id}"), None).await;
    assert!(status.is_success(), "{body}");
    let revoked = Instant::now();
    assert_eq!(
        read(&a).await,
        StatusCode::UNAUTHORIZED,
        "at once where revoked"
    );
    loop {
        if read(&b).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_millis(6500),
            "still accepted by the other server after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `fidelis` against the database (imports, as an operator would).
fn fidelis(db: &str, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["--database", db])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fidelis {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_run_on_one_server_at_a_time_and_a_killed_run_leaves_whole_steps() {
    let (db, mut a, b) = two_servers(&[]).await;
    // Many members whose points expired: the jobs have work for a while (sixteen
    // settlement batches: with six, a fast run once finished them before it was killed).
    a.setup(&[]).await;
    let members = 8000;
    let dir = tempfile::tempdir().unwrap();
    // Earned to expire in a few seconds, after the import (an import settles what is due
    // already), before the jobs run (never ahead of the clock).
    let expires = chrono::Utc::now() + chrono::Duration::seconds(25);
    let earned = common::earned_to_expire_at(10, expires).to_rfc3339();
    let (mut enrolments, mut journals) = (String::new(), String::new());
    for i in 0..members {
        enrolments.push_str(&format!("{{\"member\": \"x{i}\"}}\n"));
        journals.push_str(&format!(
            "{{\"external_id\": \"x{i}\", \"member\": \"x{i}\", \"type\": \"purchase\", \"occurred_at\": \"{earned}\", \"amount\": \"7\", \"currency\": \"EUR\"}}\n"
        ));
    }
    let (m, j) = (dir.path().join("m.ndjson"), dir.path().join("j.ndjson"));
    std::fs::write(&m, enrolments).unwrap();
    std::fs::write(&j, journals).unwrap();
    fidelis(
        &db,
        &[
            "members",
            "import",
            "--program",
            "shop",
            m.to_str().unwrap(),
        ],
    );
    fidelis(
        &db,
        &[
            "journals",
            "import",
            "--program",
            "shop",
            j.to_str().unwrap(),
        ],
    );
    let wait = expires - chrono::Utc::now() + chrono::Duration::milliseconds(500);
    assert!(wait > chrono::Duration::zero(), "the imports took too long");
    tokio::time::sleep(wait.to_std().unwrap()).await;

    // The jobs start on a; b's run is refused while a's lasts.
    let run = |node: &Server| {
        let url = node.url("/programs/shop/jobs/run");
        let http = node.http.clone();
        async move {
            let response = http
                .post(url)
                .bearer_auth(common::ADMIN)
                .json(&json!({}))
                .send()
                .await;
            match response {
                Ok(r) => {
                    let status = r.status();
                    (Some(status), r.json::<Value>().await.unwrap_or(Value::Null))
                }
                Err(_) => (None, Value::Null),
            }
        }
    };
    let started = Instant::now();
    let on_a = tokio::spawn(run(&a));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, body) = run(&b).await;
    if status != Some(StatusCode::CONFLICT) {
        let a_result = on_a.await.unwrap();
        panic!(
            "b: {status:?} {body}; a: {a_result:?} after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(status, Some(StatusCode::CONFLICT), "{body}");
    assert_eq!(body["code"], "jobs_running");
    // a dies mid-run (SIGKILL): its run never answers.
    let _ = a.child.kill();
    let _ = a.child.wait();
    let (status, _) = on_a.await.unwrap();
    assert_eq!(
        status, None,
        "a's run was cut short (it answered before it was killed)"
    );

    // Its lock went with its connection: b runs the jobs, and does what a left.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (status, body) = run(&b).await;
        match status {
            Some(StatusCode::OK) => break body,
            Some(StatusCode::CONFLICT) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("{other:?}: {body}"),
        }
    };
    assert!(
        report["settlements"].as_u64().unwrap() > 0,
        "a left work for b: {report}"
    );
    // Every member's 7 points expired exactly once: nothing is left, and no ledger has
    // more than the purchase and one expiry.
    let liability = b.get("/programs/shop/liability").await;
    assert_eq!(
        liability["currencies"][0]["outstanding_points"], 0,
        "{liability}"
    );
    for i in (0..members).step_by(97) {
        let ledger = b
            .get(&format!("/programs/shop/members/x{i}/ledger?limit=50"))
            .await;
        let entries = ledger["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "x{i}: {ledger}");
        let sum: i64 = entries.iter().map(|e| e["points"].as_i64().unwrap()).sum();
        assert_eq!(sum, 0, "x{i}: {ledger}");
    }
}
