//! Fraud rules end to end on a real `fidelis serve` (SQLite and PostgreSQL): a held
//! journal is answered 202 with its reason, a retry 200 with the same, the queue lists it
//! for staff only; agents clicking release at once release it once; a ring of transfers
//! is held; every hold and decision is an event.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use common::Server;

#[macro_use]
mod common;

both_dialects!(held_journals_wait_for_one_decision);

fn purchase(id: &str, member: &str, amount: &str) -> Value {
    json!({"external_id": id, "member": member, "type": "purchase",
           "occurred_at": chrono::Utc::now().to_rfc3339(), "amount": amount, "currency": "EUR"})
}

async fn held_journals_wait_for_one_decision(url: &str) {
    let s = Server::start(url).await;
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/shop",
            Some(
                json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                                "expiry": {"policy": "never"}, "transfer": {"daily_limit": 1000}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}]},
                "fraud": {"rules": [
                    {"rule": "velocity", "journals": "accruals", "max": 2, "within_minutes": 60},
                    {"rule": "transfer_ring", "length": 3, "within_days": 30}]}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for m in ["m", "a", "b", "c"] {
        let (status, body) = s.post("/programs/shop/members", json!({"member": m})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // The third purchase within the hour: 202, held, with the rule and its reason, and
    // nothing earned; a retry answers the same, as a replay.
    for i in 0..2 {
        let (status, body) = s
            .post(
                "/programs/shop/journals",
                purchase(&format!("p{i}"), "m", "10"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let third = purchase("p2", "m", "25");
    let (status, body) = s.post("/programs/shop/journals", third.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "held");
    assert_eq!(body["hold"]["rule"], "velocity");
    assert!(
        body["hold"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("3 accruals within 60 minutes"),
        "{body}"
    );
    assert_eq!(body["awards"], json!([]));
    let (status, headers, again) = s
        .call(Method::POST, "/programs/shop/journals", Some(third))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["status"], "held");
    assert_eq!(s.available("m").await, 20);
    let (status, _, _) = s
        .call(Method::GET, "/programs/shop/journals/p2", None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "not a journal until released"
    );

    // The queue, for staff; a member may not read it.
    let queue = s.get("/programs/shop/held-journals?status=held").await;
    assert_eq!(queue["journals"][0]["external_id"], "p2", "{queue}");
    assert_eq!(queue["journals"][0]["document"]["amount"], "25.00");
    let member = s
        .token(json!({"name": "m's app", "role": "member", "program": "shop", "member": "m"}))
        .await;
    let (status, _) = s
        .call_as(&member, Method::GET, "/programs/shop/held-journals", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Eight agents release it at once: one release, seven `already_decided`; it earns
    // once, and it is a journal now.
    let mut clicks = Vec::new();
    for _ in 0..8 {
        let http = reqwest::Client::new();
        let url = s.url("/programs/shop/held-journals/p2/release");
        clicks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(common::ADMIN)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut released = 0;
    for click in clicks {
        let (status, body) = click.await.unwrap();
        match status {
            StatusCode::OK => {
                released += 1;
                assert_eq!(body["status"], "released");
                assert_eq!(body["outcome"]["awards"][0]["points"], 25, "{body}");
            }
            StatusCode::CONFLICT => assert_eq!(body["code"], "already_decided"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(released, 1);
    assert_eq!(s.available("m").await, 45);
    assert_eq!(
        s.get("/programs/shop/journals/p2").await["status"],
        "processed"
    );

    // A ring: a → b, b → c pass; c → a is held (202), its points reserved; rejected, it
    // never moves, the reserved points come back, and its retry says so.
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a")] {
        s.post(
            "/programs/shop/journals",
            purchase(&format!("seed-{from}"), from, "50"),
        )
        .await;
        let (status, body) = s
            .post(
                &format!("/programs/shop/members/{from}/transfers"),
                json!({"external_id": format!("x-{from}"), "to": to, "currency": "points", "points": 10}),
            )
            .await;
        if from == "c" {
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            assert_eq!(body["hold"]["rule"], "transfer_ring");
            assert!(
                body["hold"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("c → a → b → c"),
                "{body}"
            );
        } else {
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
    assert_eq!(s.available("c").await, 50, "10 reserved");
    // The reservation is a hold of Fidelis's own order: visible, but no client ends it.
    let hold = s.get("/programs/shop/holds/review:x-c").await;
    assert_eq!(
        (&hold["points"], &hold["status"]),
        (&json!(10), &json!("held")),
        "{hold}"
    );
    let (status, body) = s
        .post("/programs/shop/holds/review:x-c/capture", json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("Fidelis's own"),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/programs/shop/held-journals/x-c/reject",
            json!({"note": "a ring of new accounts"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "rejected");
    let (status, body) = s
        .post("/programs/shop/held-journals/x-c/release", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = s
        .post(
            "/programs/shop/members/c/transfers",
            json!({"external_id": "x-c", "to": "a", "currency": "points", "points": 10}),
        )
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("rejected"))
    );
    assert_eq!(s.available("c").await, 60);

    // Every hold and decision is an event for webhooks.
    let events = s.get("/programs/shop/events?limit=100").await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| t.starts_with("journal."))
        .collect();
    for kind in ["journal.held", "journal.released", "journal.rejected"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "journal.held").count(), 2);
}
