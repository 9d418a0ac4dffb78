//! Reads off the primary, end to end: a real PostgreSQL primary and a hot standby streaming
//! from it (started by the test from the same binaries), `fidelis serve --read-database`.
//! The reports read the replica while it is fresh — seen by pausing its replay: a journal
//! just posted is not in the report yet — and the primary once the replica lags past the
//! bound; the lag and where reads go are in `/metrics`.

use std::time::{Duration, Instant};

use fidelis_testkit::{PgOptions, PgServer};
use reqwest::StatusCode;

mod common;
use common::{Server, purchase};

async fn on_standby(url: &str, statement: &'static str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(statement).execute(&mut c).await.unwrap();
}

async fn outstanding(server: &Server) -> i64 {
    server.get("/programs/shop/liability").await["currencies"][0]["outstanding_points"]
        .as_i64()
        .unwrap()
}

async fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_read_a_fresh_replica_and_the_primary_past_the_bound() {
    let primary = PgServer::start(PgOptions {
        durable: false,
        watchdog: true,
    })
    .unwrap();
    let url = primary.create_database("fidelis").unwrap();
    let standby = primary.start_standby().unwrap();
    let replica = format!("{}/fidelis", standby.base_url);

    // A read database must be a standby: the primary itself is refused, and serve stops.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["--database", &url, "serve", "--listen", "127.0.0.1:0"])
        .args(["--read-database", &url])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a standby"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let s = Server::start_with(
        &url,
        &["--read-database", &replica, "--read-max-lag-secs", "6"],
    )
    .await;
    s.setup(&["m1", "m2"]).await;
    let (status, body) = s
        .post("/programs/shop/journals", purchase("p1", "m1", "100"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    until(
        "the replica shows the purchase",
        Duration::from_secs(20),
        || async { outstanding(&s).await == 100 },
    )
    .await;
    assert_eq!(
        metric(&s, "fidelis_read_replica_in_use").await,
        Some(1.0),
        "the reports read the replica"
    );

    // Replay paused; a purchase on the primary. Within the bound the report reads the
    // replica, which has not seen it.
    on_standby(&replica, "SELECT pg_wal_replay_pause()").await;
    let (status, body) = s
        .post("/programs/shop/journals", purchase("p2", "m2", "50"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        outstanding(&s).await,
        100,
        "read from the replica, which has not replayed p2"
    );
    // Decisions never read the replica: the member's balance is the primary's.
    assert_eq!(
        s.get("/programs/shop/members/m2/balances").await["balances"][0]["available"],
        50
    );

    // Past the bound, the primary answers, and /metrics says so.
    until(
        "the report reads the primary",
        Duration::from_secs(25),
        || async { outstanding(&s).await == 150 },
    )
    .await;
    assert_eq!(metric(&s, "fidelis_read_replica_in_use").await, Some(0.0));
    let lag = metric(&s, "fidelis_read_replica_lag_seconds")
        .await
        .unwrap();
    assert!(lag > 6.0, "lag {lag}");

    // Replay resumed: the replica catches up and is read again.
    on_standby(&replica, "SELECT pg_wal_replay_resume()").await;
    until(
        "the replica is read again",
        Duration::from_secs(20),
        || async {
            outstanding(&s).await == 150
                && metric(&s, "fidelis_read_replica_in_use").await == Some(1.0)
        },
    )
    .await;
    let ledger = s.get("/programs/shop/members/m2/ledger").await;
    assert_eq!(ledger["entries"].as_array().unwrap().len(), 1, "{ledger}");
    drop(s);
    standby.stop();
    primary.stop();
}
