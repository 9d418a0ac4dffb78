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
    jobs_never_run_ahead_of_the_clock,
    group_points_are_spent_only_by_the_group_rule,
    partners_read_no_balances_through_outcomes,
    identical_retries_replay_without_a_time,
);

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
        .post("/programs/shop/groups/home/members", json!({"member": "kid"}))
        .await;
    assert!(status.is_success(), "{body}");
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p1", "kid", "80"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(s.available("home").await, 80, "the kid's points went to the group");
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
        .call_as(&partner, Method::GET, "/programs/shop/members/m/balances", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the read route is closed to partners");
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
    assert_eq!(body["debited"][0]["points"], 10, "what the journal did is shown: {body}");
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
    let created = answers.iter().filter(|(st, _)| *st == StatusCode::CREATED).count();
    let replayed = answers.iter().filter(|(st, _)| *st == StatusCode::OK).count();
    assert_eq!((created, replayed), (1, 9), "{answers:?}");
    assert_eq!(s.available("m").await, 300 - 40 + 5 - 1);
}
