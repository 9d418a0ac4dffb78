//! The outbox delivered to webhooks, end to end: a real `fidelis serve`, a real HTTP
//! receiver started by the test, signatures checked by an independent HMAC (Python's
//! standard library), retries and the dead letter observed, and a server killed with
//! SIGKILL in the middle of delivering — on SQLite and on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use common::{Server, purchase};

#[macro_use]
mod common;

both_dialects!(
    webhooks_are_signed_retried_dead_lettered_and_replayed,
    a_server_killed_mid_delivery_loses_no_event,
    public_only_servers_send_nothing_inside_their_network,
);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    signature: String,
    idempotency_key: String,
    attempt: String,
    body: Value,
    raw: String,
}

/// How the receiver answers, by the request's path.
#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Received>>,
    /// Paths answering 503 until switched off.
    down: Mutex<BTreeSet<String>>,
    /// How long each request is held before the answer.
    delay: Mutex<Duration>,
}

impl Receiver {
    fn got(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let raw = String::from_utf8_lossy(&body).into_owned();
    let received = Received {
        path: uri.path().to_owned(),
        signature: header("fidelis-signature"),
        idempotency_key: header("idempotency-key"),
        attempt: header("fidelis-attempt"),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
    };
    let path = received.path.clone();
    let first_attempt = received.attempt == "1";
    receiver.got.lock().unwrap().push(received);
    let delay = *receiver.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if receiver.down.lock().unwrap().contains(&path) || (path == "/flaky" && first_attempt) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// Starts the receiver on loopback: its base URL and state.
async fn start_receiver() -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, receiver)
}

/// Checks with Python's `hmac` (not the server's code) that each request carries a `v1`
/// signature of `"<t>.<body>"` under each of `secrets`.
fn verify_independently(requests: &[Received], secrets: &[&str]) {
    let cases: Vec<Value> = requests
        .iter()
        .map(|r| json!({"header": r.signature, "body": r.raw, "secrets": secrets}))
        .collect();
    let script = r#"
import hashlib, hmac, json, sys
for case in json.load(sys.stdin):
    parts = [p.split("=", 1) for p in case["header"].split(",")]
    t = [v for k, v in parts if k == "t"][0]
    sigs = [v for k, v in parts if k == "v1"]
    for secret in case["secrets"]:
        want = hmac.new(secret.encode(), (t + "." + case["body"]).encode(), hashlib.sha256).hexdigest()
        if want not in sigs:
            print("no signature by", secret[:10], "in", case["header"])
            sys.exit(1)
print("ok", len(json.loads(sys.argv[1])) if len(sys.argv) > 1 else "")
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "signatures: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Waits until `done` holds, failing with `what` after 30 seconds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The program, with no member yet (subscriptions come before the events they want).
async fn program(server: &Server) {
    server.setup(&[]).await;
}

async fn subscribe(server: &Server, url: String, events: Value) -> (i64, String) {
    let (status, body) = server
        .post(
            "/programs/shop/webhooks",
            json!({"url": url, "events": events, "description": "test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    (body["id"].as_i64().unwrap(), secret)
}

fn distinct_events(requests: &[Received]) -> BTreeMap<String, Vec<Received>> {
    let mut by_id: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for r in requests {
        let id = r.body["id"].as_str().unwrap_or_default().to_owned();
        // The idempotency key is the event's id, on every attempt.
        assert_eq!(r.idempotency_key, id, "{r:?}");
        by_id.entry(id).or_default().push(r.clone());
    }
    by_id
}

async fn webhooks_are_signed_retried_dead_lettered_and_replayed(db: &str) {
    let (base, receiver) = start_receiver().await;
    let server = Server::start_with(
        db,
        &["--webhook-attempts", "3", "--webhook-backoff-ms", "50"],
    )
    .await;
    program(&server).await;
    let (all, all_secret) = subscribe(&server, format!("{base}/all"), json!(["*"])).await;
    let (_, flaky_secret) =
        subscribe(&server, format!("{base}/flaky"), json!(["points.earned"])).await;
    receiver.down.lock().unwrap().insert("/down".into());
    let (down, _) = subscribe(&server, format!("{base}/down"), json!(["points.redeemed"])).await;
    // Refused subscriptions change nothing.
    for bad in [
        json!({"url": "ftp://example.com/", "events": ["*"]}),
        json!({"url": "http://user:pw@example.com/", "events": ["*"]}),
        json!({"url": "http://example.com/", "events": []}),
        json!({"url": "http://example.com/", "events": ["points.stolen"]}),
    ] {
        let (status, body) = server.post("/programs/shop/webhooks", bad.clone()).await;
        assert!(
            matches!(status.as_u16(), 400 | 422) && body["code"].is_string(),
            "{bad}: {status} {body}"
        );
    }
    assert_eq!(
        server.get("/programs/shop/webhooks").await["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    for m in ["m1", "m2"] {
        let (status, body) = server
            .post(
                "/programs/shop/members",
                json!({"member": m, "profile": {"name": m}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for (id, m, amount) in [("p1", "m1", "100"), ("p2", "m2", "50")] {
        let (status, body) = server
            .post("/programs/shop/journals", purchase(id, m, amount))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = server
        .post(
            "/programs/shop/members/m1/redemptions",
            json!({"external_id": "r1", "currency": "points", "points": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Every event reaches the subscriber of all types, once each.
    eventually("five events at /all", || {
        distinct_events(&receiver.got("/all")).len() == 5
    })
    .await;
    let events = distinct_events(&receiver.got("/all"));
    let types: BTreeSet<String> = events
        .values()
        .map(|r| r[0].body["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        ["member.enrolled", "points.earned", "points.redeemed"]
            .map(String::from)
            .into()
    );
    let earned: Vec<&Received> = events
        .values()
        .map(|r| &r[0])
        .filter(|r| r.body["type"] == "points.earned")
        .collect();
    assert_eq!(earned.len(), 2);
    let p1 = earned
        .iter()
        .find(|r| r.body["data"]["journal"] == "p1")
        .unwrap();
    assert_eq!(p1.body["data"]["member"], "m1");
    assert_eq!(p1.body["data"]["points"][0]["points"], 100);
    assert_eq!(p1.body["program"], "shop");

    // The flaky receiver failed each first attempt; the retry carried the same id.
    eventually("two earned events delivered to /flaky", || {
        receiver
            .got("/flaky")
            .iter()
            .filter(|r| r.attempt == "2")
            .count()
            == 2
    })
    .await;
    let flaky = distinct_events(&receiver.got("/flaky"));
    assert_eq!(flaky.len(), 2);
    for attempts in flaky.values() {
        let numbers: Vec<&str> = attempts.iter().map(|r| r.attempt.as_str()).collect();
        assert_eq!(numbers, ["1", "2"]);
    }

    // The receiver that is down got three attempts, then the delivery is dead.
    eventually("three attempts at /down", || {
        receiver.got("/down").len() == 3
    })
    .await;
    let path = format!("/programs/shop/webhooks/{down}/deliveries?status=dead");
    let mut dead = Value::Null;
    eventually("a dead delivery", || {
        dead = block(server.get(&path));
        dead["deliveries"].as_array().is_some_and(|d| d.len() == 1)
    })
    .await;
    assert_eq!(dead["deliveries"][0]["attempts"], 3);
    assert_eq!(dead["deliveries"][0]["last_status"], 503);
    assert_eq!(dead["deliveries"][0]["event_type"], "points.redeemed");

    // Every request was signed: checked by another implementation of HMAC-SHA256.
    verify_independently(&receiver.got("/all"), &[&all_secret]);
    verify_independently(&receiver.got("/flaky"), &[&flaky_secret]);

    // Replayed once the receiver is back: delivered, with the same event id.
    receiver.down.lock().unwrap().clear();
    let (status, body) = server
        .post(&format!("/programs/shop/webhooks/{down}/replay"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], 1);
    eventually("the replayed delivery", || receiver.got("/down").len() == 4).await;
    let down_events = distinct_events(&receiver.got("/down"));
    assert_eq!(down_events.len(), 1);

    // A test send answers what the receiver said, signed like the rest.
    let (status, body) = server
        .post(&format!("/programs/shop/webhooks/{all}/test"), json!(null))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["delivered"], true, "{body}");
    assert_eq!(body["status"], 200);
    let test = receiver
        .got("/all")
        .into_iter()
        .find(|r| r.body["type"] == "webhook.test")
        .expect("the test event arrived");
    assert!(
        test.idempotency_key.starts_with("evt_test_"),
        "a test has an id of its own, never an outbox event's: {test:?}"
    );
    verify_independently(&[test], &[&all_secret]);

    // After a rotation both secrets sign, for the grace period.
    let (status, rotated) = server
        .post(
            &format!("/programs/shop/webhooks/{all}/rotate-secret"),
            json!({"grace_hours": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, all_secret);
    assert!(rotated["previous_secret_until"].is_string());
    let (status, body) = server
        .post("/programs/shop/journals", purchase("p3", "m1", "7"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    eventually("p3 at /all", || {
        receiver
            .got("/all")
            .iter()
            .any(|r| r.body["data"]["journal"] == "p3")
    })
    .await;
    let p3: Vec<Received> = receiver
        .got("/all")
        .into_iter()
        .filter(|r| r.body["data"]["journal"] == "p3")
        .collect();
    assert_eq!(p3[0].signature.matches("v1=").count(), 2);
    verify_independently(&p3, &[&all_secret, &new_secret]);

    // Listed with their counts; a secret is never listed.
    let list = server.get("/programs/shop/webhooks").await;
    let first = &list["webhooks"][0];
    assert_eq!(first["id"], all);
    assert!(first.get("secret").is_none());
    assert!(first["delivered"].as_i64().unwrap() >= 6);
    assert_eq!(list["webhooks"][2]["dead"], 0);
    assert_eq!(list["webhooks"][2]["delivered"], 1);
}

async fn a_server_killed_mid_delivery_loses_no_event(db: &str) {
    let (base, receiver) = start_receiver().await;
    *receiver.delay.lock().unwrap() = Duration::from_millis(1500);
    let args = ["--webhook-lease-secs", "3", "--webhook-backoff-ms", "50"];
    let mut server = Server::start_with(db, &args).await;
    server.setup(&["m1", "m2", "m3"]).await;
    subscribe(&server, format!("{base}/slow"), json!(["points.earned"])).await;
    let journals = 20;
    for i in 0..journals {
        let (status, body) = server
            .post(
                "/programs/shop/journals",
                purchase(&format!("k{i}"), ["m1", "m2", "m3"][i % 3], "10"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Killed while requests are in flight (the receiver holds each for 1.5 s).
    eventually("a delivery in flight", || !receiver.got("/slow").is_empty()).await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let in_flight = receiver.got("/slow").len();
    assert!(
        in_flight < journals,
        "all delivered before the kill: {in_flight}"
    );
    drop(server);

    let server = Server::start_with(db, &args).await;
    *receiver.delay.lock().unwrap() = Duration::from_millis(10);
    eventually("every event after the restart", || {
        distinct_events(&receiver.got("/slow")).len() == journals
    })
    .await;
    let events = distinct_events(&receiver.got("/slow"));
    let journals_seen: BTreeSet<String> = events
        .values()
        .map(|r| r[0].body["data"]["journal"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(journals_seen.len(), journals, "one event per journal");
    // The kill fell between sending and recording: those events came again — with the
    // same id and body, so a receiver deduplicating by the idempotency key sees each once.
    assert!(
        events.values().any(|attempts| attempts.len() > 1),
        "no event was sent twice: the kill did not interrupt a delivery"
    );
    for attempts in events.values() {
        assert!(attempts.iter().all(|r| r.body == attempts[0].body));
    }
    let mut list = Value::Null;
    eventually("every delivery recorded as delivered", || {
        list = block(server.get("/programs/shop/webhooks"));
        list["webhooks"][0]["delivered"] == journals as i64
    })
    .await;
    assert_eq!(list["webhooks"][0]["pending"], 0);
    assert_eq!(list["webhooks"][0]["dead"], 0);
}

/// Two `fidelis serve` processes on one PostgreSQL database deliver the outbox
/// together: every event reaches the receiver, and none twice (each delivery is leased
/// by one server at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_postgres_deliver_each_event_once() {
    let db = fidelis_testkit::pg_url();
    let (base, receiver) = start_receiver().await;
    *receiver.delay.lock().unwrap() = Duration::from_millis(100);
    let args = ["--webhook-backoff-ms", "50"];
    let first = Server::start_with(&db, &args).await;
    first.setup(&["m1", "m2", "m3"]).await;
    subscribe(&first, format!("{base}/both"), json!(["points.earned"])).await;
    let second = Server::start_with(&db, &args).await;
    let journals = 40;
    for i in 0..journals {
        let server = if i % 2 == 0 { &first } else { &second };
        let (status, body) = server
            .post(
                "/programs/shop/journals",
                purchase(&format!("two{i}"), ["m1", "m2", "m3"][i % 3], "10"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    eventually("every event delivered", || {
        distinct_events(&receiver.got("/both")).len() == journals
    })
    .await;
    // A moment for a duplicate to show, if a delivery were not leased.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.got("/both");
    assert_eq!(got.len(), journals, "an event was sent twice");
    let mut list = Value::Null;
    eventually("every delivery recorded once", || {
        list = block(second.get("/programs/shop/webhooks"));
        list["webhooks"][0]["delivered"] == journals as i64
    })
    .await;
    assert_eq!(list["webhooks"][0]["pending"], 0);
}

/// Runs a future to completion from inside a polling closure (the test's runtime has
/// several workers, so blocking one for a request is fine).
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

async fn public_only_servers_send_nothing_inside_their_network(db: &str) {
    // The receiver listens on loopback: named by address or by a name resolving to it, a
    // server started with --webhooks-public-only refuses it, test sends included.
    let (base, receiver) = start_receiver().await;
    let server = Server::start_with(
        db,
        &[
            "--webhooks-public-only",
            "--webhook-attempts",
            "2",
            "--webhook-backoff-ms",
            "50",
        ],
    )
    .await;
    program(&server).await;
    let by_name = base.replace("127.0.0.1", "localhost");
    let (by_address, _) = subscribe(&server, format!("{base}/inside"), json!(["*"])).await;
    let (named, _) = subscribe(&server, format!("{by_name}/named"), json!(["*"])).await;
    for (id, says) in [
        (by_address, "127.0.0.1 is not a public address"),
        (named, "has no public address"),
    ] {
        let (status, body) = server
            .post(&format!("/programs/shop/webhooks/{id}/test"), json!(null))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["delivered"], false, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body}");
        // Deliveries fail with the reason, and go dead after their attempts.
        let (status, body) = server
            .post(
                "/programs/shop/members",
                json!({"member": format!("m{id}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let path = format!("/programs/shop/webhooks/{id}/deliveries?status=dead");
        let mut dead = Value::Null;
        eventually("refused deliveries go dead", || {
            dead = block(server.get(&path));
            dead["deliveries"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
        let last = dead["deliveries"][0]["last_error"]
            .as_str()
            .unwrap_or_default();
        assert!(last.contains("public"), "{dead}");
    }
    assert!(
        receiver.got("/inside").is_empty() && receiver.got("/named").is_empty(),
        "nothing reached the network inside"
    );
}
