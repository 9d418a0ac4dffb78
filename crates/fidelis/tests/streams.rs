//! Events on NATS JetStream, end to end: real `fidelis serve` processes publishing to a real
//! `nats-server` (JetStream on, started by the test), killed and restarted in the middle —
//! on SQLite and on PostgreSQL. What is checked is what a consumer of the stream sees:
//! every event of the outbox exactly once, a member's events in the order they happened.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use common::{Server, purchase};

#[macro_use]
mod common;

both_dialects!(events_reach_jetstream_once_and_in_order_through_nats_and_server_restarts);

/// The `nats-server` binary: on the PATH or where Debian's package puts it.
fn nats_server_binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"));
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "nats-server is missing: `cargo xtask test` installs it (apt-get install nats-server), \
         or install it yourself"
    );
}

/// A `nats-server` with JetStream, storing in `dir`, stopped when dropped.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start(dir: &Path, port: u16) -> Self {
        let child = Command::new(nats_server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every message of the stream, in the stream's order: (event id, subject, body).
async fn stream_messages(url: &str) -> Vec<(String, String, Value)> {
    let client = async_nats::connect(url).await.expect("connecting to NATS");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = match jetstream.get_stream("FIDELIS").await {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    let last = stream
        .info()
        .await
        .expect("the stream's info")
        .state
        .last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("a stream message");
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&m.payload).expect("a JSON body");
        out.push((id, m.subject.to_string(), body));
    }
    out
}

/// The outbox's event ids (`evt_N`), all of them.
async fn outbox(server: &Server) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut before: Option<i64> = None;
    loop {
        let page = server
            .get(&format!(
                "/programs/shop/events?limit=500{}",
                before.map(|b| format!("&before={b}")).unwrap_or_default()
            ))
            .await;
        for e in page["events"].as_array().unwrap() {
            ids.insert(format!("evt_{}", e["id"].as_i64().unwrap()));
        }
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return ids,
        }
    }
}

async fn post_purchases(server: &Server, from: usize, to: usize) {
    for i in from..to {
        let (status, body) = server
            .post(
                "/programs/shop/journals",
                purchase(&format!("p{i}"), ["m1", "m2", "m3"][i % 3], "10"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

async fn events_reach_jetstream_once_and_in_order_through_nats_and_server_restarts(db: &str) {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = Nats::start(store.path(), port);
    let url = nats.url();
    let args = ["--events", &url, "--events-lease-secs", "2"];
    let mut first = Server::start_with(db, &args).await;
    first.setup(&["m1", "m2", "m3"]).await;
    post_purchases(&first, 0, 30).await;
    // NATS goes away (killed, as a crash would) while journals keep coming: they are
    // answered as ever and their events wait in the outbox.
    nats.kill();
    post_purchases(&first, 30, 60).await;
    // A second server on the same database, also publishing: one of the two holds the
    // lease. NATS comes back with what it had stored.
    let second = Server::start_with(db, &args).await;
    let mut nats = Nats::start(store.path(), port);
    post_purchases(&second, 60, 75).await;
    // The first server dies (SIGKILL): if it held the lease, the second takes over once
    // the lease runs out.
    let _ = first.child.kill();
    let _ = first.child.wait();
    post_purchases(&second, 75, 90).await;

    let expected = outbox(&second).await;
    // 3 enrolments and 90 purchases (each earns): nothing else happened.
    assert_eq!(expected.len(), 93, "{expected:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let messages = stream_messages(&url).await;
        let ids: BTreeSet<String> = messages.iter().map(|m| m.0.clone()).collect();
        if ids == expected || Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: Vec<&String> = messages.iter().map(|m| &m.0).collect();
    let distinct: BTreeSet<String> = ids.iter().map(|s| (*s).clone()).collect();
    assert_eq!(
        distinct, expected,
        "the stream holds every event of the outbox"
    );
    assert_eq!(ids.len(), distinct.len(), "and each once: {ids:?}");
    // What a consumer reads: the webhook's body under `fidelis.{program}.{type}`.
    let mut per_member: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (id, subject, body) in &messages {
        assert_eq!(body["id"].as_str(), Some(id.as_str()));
        assert_eq!(body["program"], "shop");
        let kind = body["type"].as_str().unwrap();
        assert_eq!(subject, &format!("fidelis.shop.{kind}"));
        let member = body["data"]["member"].as_str().unwrap().to_owned();
        let n: i64 = id.trim_start_matches("evt_").parse().unwrap();
        per_member.entry(member).or_default().push(n);
    }
    for (member, ids) in &per_member {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, &sorted, "{member}'s events in the order they happened");
        // An enrolment and 30 purchases each.
        assert_eq!(ids.len(), 31, "{member}");
    }
    let earned = messages
        .iter()
        .filter(|m| m.2["type"] == "points.earned")
        .count();
    assert_eq!(earned, 90);
    // Nothing more is published once all is out, even after another round or two.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stream_messages(&url).await.len(), 93);

    // A publisher that died after JetStream acknowledged but before it recorded that: every
    // event is unrecorded again, so all are published again — with their ids, which the
    // stream's duplicate window drops.
    sql(db, "UPDATE events SET streamed = (1 = 0)").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while unstreamed(db).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the events were not published again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stream_messages(&url).await.len(),
        93,
        "published again, stored once"
    );
    nats.kill();
}

/// Runs a statement on the database at `url` (SQLite or PostgreSQL).
async fn sql(url: &str, statement: &'static str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(statement).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(statement).execute(&mut c).await.unwrap();
    }
}

/// How many events wait for their publication.
async fn unstreamed(url: &str) -> i64 {
    use sqlx::Connection;
    const COUNT: &str = "SELECT CAST(COUNT(*) AS BIGINT) FROM events WHERE NOT streamed";
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(COUNT).fetch_one(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(COUNT).fetch_one(&mut c).await.unwrap()
    }
}
