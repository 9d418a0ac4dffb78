//! The HTTP API end to end: a real `fidelis serve` process, real HTTP, on SQLite and on a
//! throw-away PostgreSQL. Every error case is a clear 4xx that changes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;
use common::{ADMIN, Server, purchase};

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
    points_are_earned_spent_refunded_cancelled_and_expired,
    replays_answer_the_first_outcome,
    concurrent_redemptions_never_overdraw,
    bad_requests_are_clear_and_change_nothing,
    tiers_upgrade_inside_the_journal_and_agents_assign_them,
    the_contract_is_the_same_on_every_route,
    a_dry_run_looks_ahead_and_changes_nothing,
    operators_find_members_by_search_and_filters,
    pay_with_points_holds_captures_and_releases_once_per_order,
    a_prepaid_partner_pays_from_its_pack_and_sees_only_itself,
    a_member_claims_missing_points_and_an_agent_decides_once,
    vouchers_are_issued_redeemed_in_part_reserved_and_refused_clearly,
    catalog_orders_spend_once_take_stock_and_give_both_back,
    badges_and_benefits_are_read_per_member,
    a_promotion_is_measured_against_its_control_group,
    segments_are_refreshed_by_the_jobs_and_gate_promotions,
    simulate_sends_its_population_to_a_running_server,
);

async fn points_are_earned_spent_refunded_cancelled_and_expired(s: Server) {
    s.setup(&["m", "old"]).await;
    let (status, body) = s
        .post("/programs/shop/journals", purchase("p1", "m", "120.00"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["awards"][0]["points"], 120);
    let (status, body) = s
        .post(
            "/programs/shop/members/m/redemptions",
            json!({"external_id": "r1", "currency": "points", "points": 50}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["balances"][0]["available"], 70);
    let (status, body) = s
        .post("/programs/shop/journals", json!({"external_id": "f1", "member": "m", "type": "refund", "occurred_at": chrono::Utc::now().to_rfc3339(),
                                                "original_external_id": "p1", "amount": "20.00", "currency": "EUR"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["reversed"][0]["points"], 20);
    let (status, body) = s.post("/programs/shop/journals/r1/cancel", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["restored"][0]["points"], 50);
    assert_eq!(s.available("m").await, 100);
    // Jobs never run ahead of the clock: expiring a day early would take valid points
    // irreversibly. Refused, and nothing changed.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (status, body) = s
        .post("/programs/shop/jobs/run", json!({"as_of": tomorrow}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "as_of_in_future");
    assert_eq!(s.available("m").await, 100);
    // Expiry through the jobs endpoint: points earned ten days ago, two seconds short of
    // expiring, are gone once the jobs run after those seconds, once; today's points stay.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let mut old = purchase("p-old", "old", "30.00");
    old["occurred_at"] = json!(common::earned_to_expire_at(10, expires).to_rfc3339());
    let (status, body) = s.post("/programs/shop/journals", old).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(s.available("old").await, 30);
    let (_, body) = s.post("/programs/shop/jobs/run", json!({})).await;
    assert_eq!(body["settlements"], 0, "not yet due: {body}");
    tokio::time::sleep((expires - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    let now = chrono::Utc::now().to_rfc3339();
    let (status, body) = s
        .post("/programs/shop/jobs/run", json!({"as_of": now}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["settlements"], 1, "{body}");
    let (_, body) = s
        .post("/programs/shop/jobs/run", json!({"as_of": now}))
        .await;
    assert_eq!(body["settlements"], 0, "a second run changes nothing");
    assert_eq!(s.available("old").await, 0);
    assert_eq!(s.available("m").await, 100);
    let journal = s.get("/programs/shop/journals/r1").await;
    assert_eq!(journal["status"], "cancelled");
    let audit = s.get("/audit?program=shop").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"program.create")
            && actions.contains(&"journal.cancel")
            && actions.contains(&"jobs.run"),
        "{actions:?}"
    );
}

async fn replays_answer_the_first_outcome(s: Server) {
    s.setup(&["m"]).await;
    let first = purchase("dup", "m", "10.00");
    let (status, headers, body) = s
        .call(
            reqwest::Method::POST,
            "/programs/shop/journals",
            Some(first.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, replay) = s
        .call(
            reqwest::Method::POST,
            "/programs/shop/journals",
            Some(first.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(replay["balances"], body["balances"]);
    let mut changed = first.clone();
    changed["amount"] = "11.00".into();
    let (status, conflict) = s.post("/programs/shop/journals", changed).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["code"], "idempotency_conflict");
    assert_eq!(s.available("m").await, 10);
    // The batch endpoint: one result per line, replays and rejections included.
    let lines = [
        purchase("b1", "m", "5.00"),
        first,
        json!({"external_id": "b2", "member": "ghost", "type": "purchase",
        "occurred_at": chrono::Utc::now().to_rfc3339(), "amount": "1", "currency": "EUR"}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect::<String>() + "not json\n";
    let response = s
        .http
        .post(s.url("/programs/shop/journals/batch"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let results: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["processed", "replayed", "rejected", "rejected"]);
    assert_eq!(results[2]["error"]["code"], "unknown_member");
    assert_eq!(results[3]["error"]["code"], "invalid_json");
    assert_eq!(s.available("m").await, 15);
}

async fn concurrent_redemptions_never_overdraw(s: Server) {
    s.setup(&["m"]).await;
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p", "m", "1000.00"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let requests = (0..50).map(|i| {
        let (http, url) = (
            s.http.clone(),
            s.url("/programs/shop/members/m/redemptions"),
        );
        async move {
            http.post(url)
                .bearer_auth(ADMIN)
                .json(&json!({"external_id": format!("r{i}"), "currency": "points", "points": 100}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures::future::join_all(requests).await;
    let redeemed = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(redeemed, 10, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::UNPROCESSABLE_ENTITY)
    );
    assert_eq!(s.available("m").await, 0);
}

async fn bad_requests_are_clear_and_change_nothing(s: Server) {
    s.setup(&["m", "sleeper"]).await;
    let (status, _) = s
        .post("/programs/shop/journals", purchase("p", "m", "50.00"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (before, entries) = (s.available("m").await, s.ledger_len("m").await);
    let raw = |body: &'static str, content_type: &'static str| {
        s.http
            .post(s.url("/programs/shop/journals"))
            .bearer_auth(ADMIN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(reqwest::Response, StatusCode, &str)> = vec![
        (
            raw("{\"external_id\": ", "application/json").await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            raw("{\"external_id\": 42}", "application/json")
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            raw(
                "{\"external_id\": \"x\", \"colour\": \"red\"}",
                "application/json",
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            raw("{}", "text/plain").await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            s.http
                .post(s.url("/programs/shop/journals"))
                .bearer_auth(ADMIN)
                .json(&purchase("u", "nobody", "5"))
                .send()
                .await
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_member",
        ),
        (
            s.http
                .post(s.url("/programs/nosuch/journals"))
                .bearer_auth(ADMIN)
                .json(&purchase("u", "m", "5"))
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "unknown_program",
        ),
        (
            s.http
                .post(s.url("/programs/shop/journals"))
                .bearer_auth(ADMIN)
                .json(&purchase("neg", "m", "-5"))
                .send()
                .await
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_journal",
        ),
        (
            s.http
                .post(s.url("/programs/shop/members/m/redemptions"))
                .bearer_auth(ADMIN)
                .json(&json!({"external_id": "big", "currency": "points", "points": 51}))
                .send()
                .await
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_points",
        ),
        // The server answers 413 before reading the whole body and closes the connection:
        // a client of its own, so the others' pooled connection is never that one.
        (
            reqwest::Client::new()
                .post(s.url("/programs/shop/journals"))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(format!("{{\"external_id\": \"{}\"}}", "x".repeat(2 << 20)))
                .send()
                .await
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            s.http
                .get(s.url("/programs/shop/members/nobody"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "unknown_member",
        ),
        (
            s.http
                .get(s.url("/programs/shop/members/m"))
                .bearer_auth("wrong")
                .send()
                .await
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ];
    for (response, status, code) in cases {
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{code}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(problem["status"], status.as_u16());
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    // A suspended member's journals are refused with the reason.
    let (status, _, _) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop/members/m/status",
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = s
        .post("/programs/shop/journals", purchase("late", "m", "5.00"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["code"], "member_suspended");
    assert_eq!(
        (s.available("m").await, s.ledger_len("m").await),
        (before, entries),
        "nothing changed"
    );
}

async fn tiers_upgrade_inside_the_journal_and_agents_assign_them(s: Server) {
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/club",
            Some(json!({"name": "Club", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}},
                               {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "1"}]},
                "tier_groups": [{"code": "status", "currency": "status", "tiers": [
                    {"code": "member", "threshold": 0},
                    {"code": "silver", "threshold": 100, "benefits": [{"code": "free_shipping", "name": "Free shipping"}]},
                    {"code": "gold", "threshold": 1000, "benefits": [{"code": "earning_multiplier", "value": "1.5"}]}]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post("/programs/club/members", json!({"member": "m"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut p = purchase("t1", "m", "120.00");
    p["member"] = json!("m");
    let (status, body) = s.post("/programs/club/journals", p).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["tier_changes"][0]["to"], "silver", "{body}");
    assert_eq!(body["tier_changes"][0]["reason"], "upgrade");
    let tiers = s.get("/programs/club/members/m/tiers").await;
    let status_tier = &tiers["tiers"][0];
    assert_eq!(status_tier["tier"], "silver");
    assert_eq!(status_tier["progress"], 120);
    assert_eq!(status_tier["next_tier"], "gold");
    assert_eq!(status_tier["next_threshold"], 1000);
    assert_eq!(status_tier["benefits"][0]["code"], "free_shipping");

    // An agent gives gold, with a reason; a bad request changes nothing.
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/club/members/m/tiers/status",
            Some(json!({"tier": "platinum", "reason": "vip"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "unknown_tier");
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/club/members/m/tiers/status",
            Some(json!({"tier": "gold", "reason": "   "})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        s.get("/programs/club/members/m/tiers").await["tiers"][0]["tier"],
        "silver"
    );
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/club/members/m/tiers/status",
            Some(json!({"tier": "gold", "reason": "complaint 17", "valid_until": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str()),
        (Some("silver"), Some("gold"))
    );
    let tiers = s.get("/programs/club/members/m/tiers").await;
    assert_eq!(tiers["tiers"][0]["tier"], "gold");
    assert_eq!(tiers["tiers"][0]["benefits"][0]["value"], "1.5");
    let audit = s.get("/audit?program=club").await;
    let entries = audit["entries"].as_array().unwrap();
    let assign = entries
        .iter()
        .find(|e| e["action"] == "tier.assign")
        .expect("assignment audited");
    assert_eq!(assign["after"]["reason"], "complaint 17");
    assert_eq!(assign["subject"], "m");
    let upgrade = entries
        .iter()
        .find(|e| e["action"] == "tier.change")
        .expect("upgrade audited");
    assert_eq!(upgrade["after"]["journal"], "t1");

    // Referral codes: each member has one; enrolling with it links the two.
    let code = s.get("/programs/club/members/m").await["referral_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = s
        .post(
            "/programs/club/members",
            json!({"member": "friend", "referral_code": code}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["referred_by"], "m");
    let (status, body) = s
        .post(
            "/programs/club/members",
            json!({"member": "stranger", "referral_code": "NOPE"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "unknown_referral_code");
}

/// What integrators rely on, the same on every route: a path naming nothing is 404, an
/// external id reused for something else is 409, the batch takes NDJSON only, and the
/// bearer scheme is case-insensitive.
/// A manager checks a promotion that starts tomorrow with a purchase dated the day after:
/// the dry run applies it, as of that date, and writes nothing; posting it for real is
/// still `future_dated`.
async fn a_dry_run_looks_ahead_and_changes_nothing(s: Server) {
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/ahead",
            Some(json!({"name": "Ahead", "time_zone": "UTC", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}]},
                "promotions": [{"code": "launch", "name": "Launch bonus", "status": "active",
                    "starts_at": tomorrow.to_string(),
                    "actions": [{"type": "fixed", "currency": "points", "points": 10}]},
                    {"code": "weekend", "name": "Weekend double", "status": "active",
                     "condition": "local.weekday >= 6 && journal.amount >= 10.0",
                     "actions": [{"type": "multiplier", "currency": "points", "factor": "2"}]},
                    {"code": "shoes", "name": "Shoes", "status": "active", "scope": "line",
                     "condition": "line.category == 'shoes'",
                     "actions": [{"type": "fixed", "currency": "points", "points": 3}]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post("/programs/ahead/members", json!({"member": "m"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let journal = |external_id: &str, at: chrono::DateTime<chrono::Utc>| {
        json!({"external_id": external_id, "member": "m", "type": "purchase", "amount": "20.00",
               "currency": "EUR", "occurred_at": at.to_rfc3339()})
    };
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    let (status, body) = s
        .post("/programs/ahead/simulate", journal("look-ahead", later))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let launch = body["promotions"]
        .as_array()
        .and_then(|p| p.iter().find(|r| r["promotion"] == "launch"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(launch["result"], "applied", "{body}");
    let (status, body) = s
        .post(
            "/programs/ahead/simulate",
            journal("today", chrono::Utc::now()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["promotions"].as_array().is_some_and(|p| p
            .iter()
            .any(|r| r["promotion"] == "launch" && r["result"] == "not_started")),
        "{body}"
    );
    // A condition that does not hold says what it saw: on a Tuesday, the weekday.
    let mut days = 1;
    let tuesday = loop {
        let day = chrono::Utc::now() + chrono::Duration::days(days);
        if chrono::Datelike::weekday(&day) == chrono::Weekday::Tue {
            break day;
        }
        days += 1;
    };
    let mut on_tuesday = journal("tuesday", tuesday);
    on_tuesday["lines"] =
        json!([{"line_id": "1", "category": "socks", "quantity": 1, "amount": "20.00"}]);
    let (status, body) = s.post("/programs/ahead/simulate", on_tuesday).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = |code: &str| {
        body["promotions"]
            .as_array()
            .and_then(|p| p.iter().find(|r| r["promotion"] == code))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(result("weekend")["result"], "condition_false", "{body}");
    assert_eq!(
        result("weekend")["detail"],
        "the condition saw local.weekday = 2, journal.amount = 20",
        "{body}"
    );
    assert_eq!(
        result("shoes")["detail"],
        "the condition saw line 1: line.category = \"socks\"",
        "{body}"
    );
    // Nothing was written, and the real thing is still refused.
    let member = s.get("/programs/ahead/members/m/balances").await;
    assert_eq!(member["balances"][0]["available"], 0, "{member}");
    let (status, body) = s
        .post("/programs/ahead/journals", journal("look-ahead", later))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "future_dated");
    let (status, _, _) = s
        .call(
            reqwest::Method::GET,
            "/programs/ahead/journals/look-ahead",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn the_contract_is_the_same_on_every_route(s: Server) {
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/contract",
            Some(json!({"name": "Contract", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"},
                                "transfer": {"daily_limit": 1000}, "reinstate_within_days": 30}],
                "earning": {"base": [{"currency": "points", "rate": "1"}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for m in ["a", "b"] {
        let (status, body) = s
            .post(
                "/programs/contract/members",
                json!({"member": m, "enrolled_at": "2026-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // A purchase dated before the member enrolled earns nothing (the program allows 0 days
    // before enrolment, the default) and changes nothing; one on the day of enrolment earns.
    let (status, body) = s
        .post("/programs/contract/members", json!({"member": "late"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut early = purchase("early", "late", "10.00");
    early["occurred_at"] = json!("2026-01-20T10:00:00Z");
    let (status, body) = s.post("/programs/contract/journals", early).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "before_enrolment", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("days_before_enrolment")),
        "{body}"
    );
    let (status, _, _) = s
        .call(
            reqwest::Method::GET,
            "/programs/contract/journals/early",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = s
        .post(
            "/programs/contract/journals",
            purchase("on-time", "late", "10.00"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut p1 = purchase("p1", "a", "100.00");
    p1["occurred_at"] = json!("2026-11-20T10:00:00Z");
    let (status, body) = s.post("/programs/contract/journals", p1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // An external id used for something else: 409 on every route that takes one.
    for (path, request) in [
        (
            "/programs/contract/members/a/transfers",
            json!({"external_id": "p1", "to": "b", "currency": "points", "points": 5}),
        ),
        (
            "/programs/contract/members/a/reinstatements",
            json!({"external_id": "p1", "currency": "points", "reason": "goodwill"}),
        ),
        (
            "/programs/contract/members/a/redemptions",
            json!({"external_id": "p1", "currency": "points", "points": 5}),
        ),
        (
            "/programs/contract/members/a/adjustments",
            json!({"external_id": "p1", "currency": "points", "points": 5, "reason": "goodwill"}),
        ),
    ] {
        let (status, body) = s.post(path, request).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {body}");
        assert_eq!(body["code"], "idempotency_conflict", "{path}");
    }

    // A path that names nothing is 404.
    for (method, path, request) in [
        (reqwest::Method::GET, "/programs/contract/groups/nope", None),
        (
            reqwest::Method::POST,
            "/programs/contract/groups/nope/members",
            Some(json!({"member": "a"})),
        ),
        (
            reqwest::Method::POST,
            "/programs/contract/groups/nope/redemptions",
            Some(json!({"external_id": "g1", "member": "a", "currency": "points", "points": 1})),
        ),
        (
            reqwest::Method::PUT,
            "/programs/contract/members/a/tiers/nope",
            Some(json!({"tier": "gold", "reason": "vip"})),
        ),
        (
            reqwest::Method::GET,
            "/programs/contract/members/nobody",
            None,
        ),
        (
            reqwest::Method::GET,
            "/programs/contract/journals/nothing",
            None,
        ),
    ] {
        let (status, _, body) = s.call(method.clone(), path, request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(
            body["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("unknown_")),
            "{body}"
        );
    }

    // A member the body names (not the path) that does not exist: the request is
    // unprocessable (422), the path is not unknown.
    for (path, request) in [
        (
            "/programs/contract/members/a/transfers",
            json!({"external_id": "t-ghost", "to": "ghost", "currency": "points", "points": 1}),
        ),
        (
            "/programs/contract/members/a/merge",
            json!({"into": "ghost"}),
        ),
        (
            "/programs/contract/groups",
            json!({"group": "g-ghost", "name": "Ghosts", "share_percent": 50, "redeem": "owner", "owner": "ghost"}),
        ),
    ] {
        let (status, body) = s.post(path, request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["code"], "unknown_member", "{path}: {body}");
    }

    // JSON Schema's integers include 5.0: the document says `integer`, the server agrees.
    let (status, body) = s
        .post(
            "/programs/contract/members/a/redemptions",
            json!({"external_id": "whole-float", "currency": "points", "points": 5.0}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["debited"][0]["points"], 5, "{body}");
    let (status, body) = s
        .post(
            "/programs/contract/members/a/redemptions",
            json!({"external_id": "fraction", "currency": "points", "points": 5.5}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_body");

    // U+0000 cannot be stored in PostgreSQL's jsonb: refused on both databases, not a 500.
    let (status, body) = s
        .post(
            "/programs/contract/members",
            json!({"member": "nul", "profile": {"name": "a\0b"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_member");
    // Nor a number PostgreSQL's decimals would not give back (it was a 500 on reading).
    let (status, body) = s
        .post(
            "/programs/contract/members",
            json!({"member": "huge", "profile": {"score": 1.7976931348623157e308}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_member");
    // Up to the bound, numbers come back as they went in, on both databases.
    for (member, score) in [("big", 1e300), ("tiny", 5e-324), ("negative", -1e300)] {
        let (status, body) = s
            .post(
                "/programs/contract/members",
                json!({"member": member, "profile": {"score": score}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let read = s.get(&format!("/programs/contract/members/{member}")).await;
        assert_eq!(read["profile"]["score"].as_f64(), Some(score), "{read}");
    }
    for query in ["program=%02%00x", "actor=a%00b", "program=Not-A-Code"] {
        let (status, _, body) = s
            .call(reqwest::Method::GET, &format!("/audit?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["code"], "invalid_query", "{query}");
    }

    // A refund keeps where it happened.
    let (status, body) = s
        .post(
            "/programs/contract/journals",
            json!({"external_id": "r1", "member": "a", "type": "refund", "original_external_id": "p1",
                   "amount": "10.00", "currency": "EUR", "store": "S-7", "channel": "store",
                   "occurred_at": "2026-11-21T10:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let refund = s.get("/programs/contract/journals/r1").await;
    assert_eq!(refund["document"]["store"], "S-7", "{refund}");
    assert_eq!(refund["document"]["channel"], "store", "{refund}");

    // An amount as a JSON number is refused with the reason, not serde's type error.
    let mut float = purchase("float", "a", "1.00");
    float["amount"] = json!(79.9);
    let (status, body) = s.post("/programs/contract/journals", float).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("decimal string such as \"79.9\"")),
        "{body}"
    );

    // A body is a JSON object: an array is not read as the fields by position.
    for (path, body) in [
        ("/programs/contract/jobs/run", json!([])),
        (
            "/programs/contract/members/a/redemptions",
            json!(["by-position", "points", 1]),
        ),
    ] {
        let (status, answer) = s.post(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["code"], "invalid_body", "{path}");
    }
    // … and so is a nested one: consents or order lines by position are refused, and
    // nothing is created.
    for (path, body) in [
        (
            "/programs/contract/members",
            json!({"member": "by-position", "consents": [null, null]}),
        ),
        (
            "/programs/contract/journals",
            json!({"external_id": "lines-by-position", "member": "a", "type": "purchase",
                   "amount": "10.00", "currency": "EUR", "lines": [["l1", "sku"]]}),
        ),
    ] {
        let (status, answer) = s.post(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert!(
            answer["detail"]
                .as_str()
                .is_some_and(|d| d.contains("JSON object")),
            "{path}: {answer}"
        );
    }
    // A program definition's sections too: a currency, the earning rules or the fraud
    // rules by position are refused, and nothing is stored.
    for (field, value) in [
        ("currencies", json!([["points", "Points", "redeemable"]])),
        ("earning", json!([[{"currency": "points", "rate": "1"}]])),
        ("fraud", json!([[{"rule": "velocity"}]])),
    ] {
        let mut definition = json!({"name": "By position", "time_zone": "Europe/Berlin",
            "money_currency": "EUR",
            "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                            "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}]}});
        definition[field] = value;
        let (status, _, answer) = s
            .call(
                reqwest::Method::PUT,
                "/programs/by-position",
                Some(definition),
            )
            .await;
        // Said with the section's path, as every problem of a definition is.
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {answer}"
        );
        assert_eq!(answer["code"], "invalid_program");
        let problem = &answer["problems"][0];
        assert!(
            problem["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(field))
                && problem["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("JSON object")),
            "{field}: {answer}"
        );
    }
    for path in [
        "/programs/by-position",
        "/programs/contract/members/by-position",
        "/programs/contract/journals/lines-by-position",
    ] {
        let (status, _, _) = s.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // A group's name is printable text (U+0000 was a 500 on PostgreSQL).
    let (status, body) = s
        .post(
            "/programs/contract/groups",
            json!({"group": "g-nul", "name": "a\0b", "share_percent": 50, "redeem": "owner", "owner": "a"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_request");

    // A weak password has its own code.
    let (status, body) = s
        .post(
            "/users",
            json!({"email": "weak@example.com", "password": "aaaaaaaaaaaaaaaa", "role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "weak_password");

    // The batch takes NDJSON, and something in it.
    let batch = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = s
            .http
            .post(s.url("/programs/contract/journals/batch"))
            .bearer_auth(ADMIN)
            .body(body);
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        request.send()
    };
    let line = r#"{"external_id": "b1", "member": "a", "type": "purchase", "occurred_at": "2026-11-20T10:00:00Z", "amount": "1.00", "currency": "EUR"}"#;
    for (content_type, body, expected, code) in [
        (
            None,
            line,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Some("text/plain"),
            line,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Some("application/x-ndjson"),
            "",
            StatusCode::BAD_REQUEST,
            "empty_batch",
        ),
        (
            Some("application/x-ndjson"),
            "\n \n",
            StatusCode::BAD_REQUEST,
            "empty_batch",
        ),
    ] {
        let response = batch(content_type, body).await.expect("answered");
        assert_eq!(response.status(), expected, "{content_type:?} {body:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{content_type:?}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code);
    }
    let response = batch(Some("application/x-ndjson; charset=utf-8"), line)
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("\"b1\""));

    // RFC 9110: the scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = s
            .http
            .get(s.url("/programs/contract/members/a"))
            .header("authorization", format!("{scheme} {ADMIN}"))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
}

/// The bootstrap token lives as long as `FIDELIS_ADMIN_TOKEN` names it: restarted without
/// it, the server no longer accepts it (and prints a new admin token instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsetting_the_admin_token_retires_it() {
    let db = fidelis_testkit::sqlite_db();
    let s = Server::start(&db.url).await;
    let (status, _, _) = s.call(reqwest::Method::GET, "/programs", None).await;
    assert_eq!(status, StatusCode::OK);
    drop(s);
    let s = Server::start_as(&db.url, &[], None).await;
    let (status, _, body) = s.call(reqwest::Method::GET, "/programs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

async fn operators_find_members_by_search_and_filters(s: Server) {
    s.setup(&[]).await;
    for (m, profile) in [
        (
            "C-1",
            json!({"name": "Ann Smith", "email": "ann@example.com", "phone": "+44 20 7946 0018"}),
        ),
        (
            "C-2",
            json!({"name": "Anna Schmidt", "birthday": "1990-12-01"}),
        ),
        ("C-3", json!({"name": "Bob Jones"})),
    ] {
        let (status, body) = s
            .post(
                "/programs/shop/members",
                json!({"member": m, "profile": profile}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = s
        .post("/programs/shop/journals", purchase("p1", "C-1", "30.00"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let members = |body: &Value| -> Vec<String> {
        body["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["member"].as_str().expect("an id").to_owned())
            .collect()
    };
    assert_eq!(
        members(&s.get("/programs/shop/members?q=ann").await),
        ["C-1", "C-2"]
    );
    assert_eq!(
        members(&s.get("/programs/shop/members?q=Ann%20SMI").await),
        ["C-1"]
    );
    assert_eq!(
        members(&s.get("/programs/shop/members?q=%2B44%2020").await),
        ["C-1"]
    );
    assert_eq!(
        members(&s.get("/programs/shop/members?balance_min=1").await),
        ["C-1"]
    );
    let listed = s.get("/programs/shop/members?q=ann%20smith").await;
    assert_eq!(
        listed["members"][0]["balances"][0],
        json!({"currency": "points", "available": 30, "pending": 0})
    );
    assert_eq!(listed["members"][0]["profile"]["email"], "ann@example.com");
    // Pages of one, newest enrolment first, end to end.
    let mut seen = Vec::new();
    let mut path = "/programs/shop/members?sort=-enrolled_at&limit=1".to_owned();
    loop {
        let page = s.get(&path).await;
        seen.extend(members(&page));
        match page["next_cursor"].as_str() {
            Some(c) => {
                path = format!("/programs/shop/members?sort=-enrolled_at&limit=1&cursor={c}")
            }
            None => break,
        }
    }
    assert_eq!(seen, ["C-3", "C-2", "C-1"]);
    // Malformed queries are 400 invalid_query, saying what is wrong.
    for (query, says) in [
        ("sort=name", "sort"),
        ("limit=0", "limit"),
        ("status=gone", "status"),
        ("cursor=zz", "cursor"),
        ("enrolled_from=yesterday", "RFC 3339"),
        ("q=a%20b%20c%20d%20e%20f", "at most 5 words"),
    ] {
        let (status, _, body) = s
            .call(
                reqwest::Method::GET,
                &format!("/programs/shop/members?{query}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["code"], "invalid_query", "{query}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{query}: {body}"
        );
    }
    // What the program does not have is named as such.
    for (query, code) in [
        ("tier=platinum", "unknown_tier"),
        ("currency=miles&balance_min=1", "unknown_currency"),
        ("sort=external_id&cursor=t1.1", "cursor_mismatch"),
    ] {
        let (status, _, body) = s
            .call(
                reqwest::Method::GET,
                &format!("/programs/shop/members?{query}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["code"], code, "{query}");
    }
    // A birthday the program could never read is refused, not stored.
    let (status, body) = s
        .post(
            "/programs/shop/members",
            json!({"member": "C-4", "profile": {"birthday": "12/01/1990"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("YYYY-MM-DD")),
        "{body}"
    );
    assert_eq!(members(&s.get("/programs/shop/members").await).len(), 3);
    // A member token sees itself, never the list.
    let own = s
        .token(json!({"name": "c1", "role": "member", "program": "shop", "member": "C-1"}))
        .await;
    let (status, body) = s
        .call_as(&own, reqwest::Method::GET, "/programs/shop/members", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

async fn pay_with_points_holds_captures_and_releases_once_per_order(s: Server) {
    s.setup(&["m"]).await;
    let (status, body) = s
        .post("/programs/shop/journals", purchase("p1", "m", "120.00"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Held at checkout: out of the balance at once.
    let hold = json!({"order_id": "A-1", "member": "m", "currency": "points", "points": 100, "ttl_seconds": 600});
    let (status, body) = s.post("/programs/shop/holds", hold.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "held");
    assert_eq!(s.available("m").await, 20);
    let body = s.get("/programs/shop/members/m/balances").await;
    assert_eq!(body["balances"][0]["held"], 100, "{body}");
    // The checkout retries: the same hold, once.
    let (status, body) = s.post("/programs/shop/holds", hold.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], true);
    assert_eq!(s.available("m").await, 20);
    // The same order with other points: a conflict, nothing changes.
    let mut other = hold.clone();
    other["points"] = json!(10);
    let (status, body) = s.post("/programs/shop/holds", other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "idempotency_conflict");
    // More than is spendable: refused with the usual code.
    let (status, body) = s
        .post(
            "/programs/shop/holds",
            json!({"order_id": "A-2", "member": "m", "currency": "points", "points": 21}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "insufficient_points");
    // Captured, once; then it cannot be released.
    let (status, body) = s.post("/programs/shop/holds/A-1/capture", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "captured");
    let body = s.get("/programs/shop/members/m/balances").await;
    assert_eq!(body["balances"][0]["held"], 0, "{body}");
    let (status, body) = s.post("/programs/shop/holds/A-1/capture", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], true);
    let (status, body) = s.post("/programs/shop/holds/A-1/release", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "hold_captured");
    assert_eq!(s.available("m").await, 20);
    // A capture is a redemption in the ledger, and cancelling it gives the points back.
    let journal = s.get("/programs/shop/journals/capture:A-1").await;
    assert_eq!(journal["type"], "capture", "{journal}");
    let (status, body) = s
        .post("/programs/shop/journals/capture:A-1/cancel", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(s.available("m").await, 120);
    // Released: the points come back; a capture after it is refused.
    let (status, _) = s
        .post(
            "/programs/shop/holds",
            json!({"order_id": "B-1", "member": "m", "currency": "points", "points": 50}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = s.post("/programs/shop/holds/B-1/release", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "released");
    assert_eq!(s.available("m").await, 120);
    let (status, body) = s.post("/programs/shop/holds/B-1/capture", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "hold_released");
    // An unknown order, and a hold's step posted as a plain journal: clear refusals.
    let (status, body) = s.post("/programs/shop/holds/none/capture", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "unknown_hold");
    let (status, body) = s
        .post(
            "/programs/shop/journals",
            json!({"external_id": "capture:B-1", "member": "m", "type": "capture"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "use_holds_routes");
    let hold = s.get("/programs/shop/holds/B-1").await;
    assert_eq!(hold["status"], "released", "{hold}");
    assert_eq!(hold["points"], 50);
    // A quote: without a payment rate the currency pays nothing; with one, points pay
    // what the member can spend, down to the cent.
    let (status, _, body) = s
        .call(
            reqwest::Method::GET,
            "/programs/shop/members/m/quote?currency=points&amount=25.00",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "currency_not_payable");
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop",
            Some(json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "rolling", "days": 10},
                                "payment": {"money_per_point": "0.01", "minimum_points": 10}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}], "days_before_enrolment": 3650}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let quote = s
        .get("/programs/shop/members/m/quote?currency=points&amount=25.00")
        .await;
    assert_eq!(quote["points_to_cover"], 2500, "{quote}");
    assert_eq!(quote["spendable"], 120);
    assert_eq!(quote["points"], 120);
    assert_eq!(quote["amount_covered"], "1.20");
    assert_eq!(quote["amount_remaining"], "23.80");
    let quote = s
        .get("/programs/shop/members/m/quote?currency=points&amount=25.00&points=5")
        .await;
    assert_eq!(quote["points"], 0, "below the minimum of 10: {quote}");
    assert_eq!(quote["below_minimum"], true);
}

async fn vouchers_are_issued_redeemed_in_part_reserved_and_refused_clearly(s: Server) {
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop",
            Some(json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}], "days_before_enrolment": 3650},
                "promotions": [{"code": "big-basket", "name": "A coffee for a big basket", "status": "active",
                                "condition": "journal.amount >= 100.0",
                                "actions": [{"type": "voucher", "voucher": "coffee"}]}],
                "vouchers": [{"code": "coffee", "name": "Free coffee", "value": {"free_product": "COFFEE"}},
                             {"code": "gift", "name": "Gift card", "value": {"fixed": "50.00"},
                              "code_format": {"prefix": "GIFT-"}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for m in ["m", "n"] {
        let (status, body) = s.post("/programs/shop/members", json!({"member": m})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // A promotion issues a voucher inside the journal; the outcome names its code.
    let (status, body) = s
        .post("/programs/shop/journals", purchase("p1", "m", "120.00"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let coffee = body["promotions"][0]["rewards"][0]["voucher"]
        .as_str()
        .unwrap_or_else(|| panic!("a voucher code in {body}"))
        .to_owned();
    let mine = s.get("/programs/shop/members/m/vouchers").await;
    assert_eq!(mine["vouchers"][0]["code"], coffee.as_str(), "{mine}");
    assert_eq!(mine["vouchers"][0]["source"], "promotion:big-basket");
    // Redeemed once (a retry answers 200 and changes nothing), then used up.
    let path = format!("/programs/shop/vouchers/{coffee}/redeem");
    let (status, body) = s.post(&path, json!({"key": "till-1"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "redeemed");
    let (status, headers, body) = s
        .call(reqwest::Method::POST, &path, Some(json!({"key": "till-1"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, body) = s.post(&path, json!({"key": "till-2"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "voucher_redeemed");
    assert_eq!(
        body["type"], "urn:fidelis:problem:voucher_redeemed",
        "a problem+json body: {body}"
    );

    // An agent issues a gift card: spent in parts, reserved for an order, cancelled.
    let (status, body) = s
        .post(
            "/programs/shop/vouchers",
            json!({"definition": "gift", "member": "n", "key": "ticket-7"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let gift = body["code"].as_str().unwrap().to_owned();
    assert!(gift.starts_with("GIFT-"), "{gift}");
    assert_eq!(body["value"], "50.00");
    let (status, body) = s
        .post(
            "/programs/shop/vouchers",
            json!({"definition": "gift", "member": "n", "key": "ticket-7"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::OK, Some(gift.as_str()))
    );
    let at = |what: &str| format!("/programs/shop/vouchers/{}/{what}", gift.to_lowercase());
    let (status, body) = s
        .post(&at("redeem"), json!({"key": "r1", "amount": "12.50"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["remaining"].as_str()),
        (Some("issued"), Some("37.50"))
    );
    let (status, body) = s
        .post(&at("redeem"), json!({"key": "r2", "amount": "40.00"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "voucher_value_exceeded");
    let (status, body) = s
        .post(&at("redeem"), json!({"key": "r3", "amount": "1.001"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_amount");
    let (status, body) = s
        .post(&at("reserve"), json!({"key": "order-9", "amount": "7.50"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["reserved_amount"], "7.50");
    let (status, body) = s.post(&at("redeem"), json!({"key": "r4"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "voucher_reserved");
    let (status, body) = s
        .post(&at("redeem-reserved"), json!({"key": "order-8"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "voucher_not_reserved");
    let (status, body) = s
        .post(&at("redeem-reserved"), json!({"key": "order-9"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["remaining"], "30.00");
    let (status, body) = s.post(&at("cancel"), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["remaining"].as_str()),
        (Some("cancelled"), Some("0.00"))
    );
    let (status, body) = s.post(&at("redeem"), json!({"key": "r5"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "voucher_cancelled");
    // Unknown codes and definitions, and bad bodies: clear refusals.
    let (status, body) = s
        .post(
            "/programs/shop/vouchers/NOPE-1234/redeem",
            json!({"key": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "unknown_voucher");
    let (status, body) = s
        .post(
            "/programs/shop/vouchers",
            json!({"definition": "nope", "member": "n", "key": "k"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "unknown_voucher_definition");
    let (status, body) = s.post(&at("redeem"), json!({"amount": "1.00"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_body", "a redemption names its key");
    for (body, code) in [
        (json!({"key": "k".repeat(101)}), "invalid_request"),
        (json!({"key": "a\u{1}b"}), "invalid_request"),
        (json!({"key": "k", "amount": "+1"}), "invalid_amount"),
        (json!({"key": "k", "amount": "1e2"}), "invalid_amount"),
    ] {
        let (status, answer) = s.post(&at("reserve"), body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["code"], code, "{body}: {answer}");
    }
    let entries_before = s.get(&format!("/programs/shop/vouchers/{gift}")).await;
    assert_eq!(entries_before["status"], "cancelled", "nothing changed");
}

async fn catalog_orders_spend_once_take_stock_and_give_both_back(s: Server) {
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop",
            Some(json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}], "days_before_enrolment": 3650},
                "vouchers": [{"code": "gift", "name": "Gift card", "value": {"fixed": "10.00"}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for m in ["m", "n"] {
        let (status, body) = s.post("/programs/shop/members", json!({"member": m})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = s
            .post(
                "/programs/shop/journals",
                purchase(&format!("p-{m}"), m, "500.00"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // A bad item: every problem named, nothing stored.
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop/catalog/lamp",
            Some(json!({"name": "Lamp", "currency": "miles", "points": 300, "voucher": "nope"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_item");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("currency") && detail.contains("voucher"),
        "{detail}"
    );
    // One lamp in stock, with a gift card.
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop/catalog/lamp",
            Some(json!({"name": "Lamp", "currency": "points", "points": 300, "voucher": "gift", "stock": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let catalog = s.get("/programs/shop/catalog?member=m").await;
    assert_eq!(catalog["items"][0]["price"], 300, "{catalog}");
    assert_eq!(catalog["items"][0]["stock"], 1);

    let order = json!({"order_id": "R-1", "member": "m", "item": "lamp"});
    let (status, body) = s.post("/programs/shop/orders", order.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["points"].as_i64()),
        (Some("placed"), Some(300))
    );
    let gift = body["voucher"]
        .as_str()
        .expect("the order issued a gift card")
        .to_owned();
    // A retry: the same order, nothing spent again.
    let (status, headers, body) = s
        .call(reqwest::Method::POST, "/programs/shop/orders", Some(order))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(body["voucher"], gift.as_str());
    let balance = s.get("/programs/shop/members/m/balances").await;
    assert_eq!(balance["balances"][0]["available"], 200, "{balance}");
    // The last unit is gone: the next order is a conflict, nothing spent.
    let (status, body) = s
        .post(
            "/programs/shop/orders",
            json!({"order_id": "R-2", "member": "n", "item": "lamp"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("out_of_stock")),
        "{body}"
    );
    assert_eq!(
        s.get("/programs/shop/members/n/balances").await["balances"][0]["available"],
        500
    );
    let catalog = s.get("/programs/shop/catalog?member=n").await;
    assert_eq!(
        catalog["items"][0]["unavailable"], "out_of_stock",
        "{catalog}"
    );

    // Cancelled: points, stock and the gift card go back.
    let (status, body) = s
        .post("/programs/shop/orders/R-1/cancel", json!(null))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(
        s.get("/programs/shop/members/m/balances").await["balances"][0]["available"],
        500
    );
    assert_eq!(s.get("/programs/shop/catalog/lamp").await["stock"], 1);
    assert_eq!(
        s.get(&format!("/programs/shop/vouchers/{gift}")).await["status"],
        "cancelled"
    );
    let (status, headers, _) = s
        .call(
            reqwest::Method::POST,
            "/programs/shop/orders/R-1/cancel",
            None,
        )
        .await;
    assert_eq!(
        (status, headers["idempotent-replayed"].to_str().unwrap()),
        (StatusCode::OK, "true")
    );

    // Now n gets it; fulfilled, it can no longer be cancelled.
    let (status, body) = s
        .post(
            "/programs/shop/orders",
            json!({"order_id": "R-3", "member": "n", "item": "lamp"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post("/programs/shop/orders/R-3/fulfil", json!(null))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::CREATED, Some("fulfilled")),
        "{body}"
    );
    let (status, body) = s
        .post("/programs/shop/orders/R-3/cancel", json!(null))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("order_fulfilled")),
        "{body}"
    );
    let (status, body) = s
        .post("/programs/shop/orders/R-404/cancel", json!(null))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_order")),
        "{body}"
    );
    let listed = s.get("/programs/shop/orders?member=n").await;
    let ids: Vec<&str> = listed["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["R-3"], "{listed}");
    let (status, body) = s
        .post(
            "/programs/shop/orders",
            json!({"order_id": "R-5", "member": "n", "item": "lamp", "extra": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

async fn badges_and_benefits_are_read_per_member(s: Server) {
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop",
            Some(json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}},
                               {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}], "days_before_enrolment": 3650},
                "tier_groups": [{"code": "status", "currency": "status",
                                 "tiers": [{"code": "base", "name": "Base", "threshold": 0,
                                            "benefits": [{"code": "newsletter", "name": "Newsletter"}]}]}],
                "badges": [{"code": "first-buy", "name": "First buy"}],
                "promotions": [{"code": "welcome", "name": "Welcome", "status": "active",
                                "actions": [{"type": "badge", "badge": "first-buy"},
                                            {"type": "benefit", "benefit": {"code": "lounge", "name": "Lounge", "value": "2"}, "days": 7}]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post("/programs/shop/members", json!({"member": "m"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post("/programs/shop/journals", purchase("p1", "m", "10.00"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let badges = s.get("/programs/shop/members/m/badges").await;
    assert_eq!(badges["badges"][0]["badge"], "first-buy", "{badges}");
    assert_eq!(badges["badges"][0]["times"], 1);
    let benefits = s.get("/programs/shop/members/m/benefits").await;
    let list: Vec<(&str, &str)> = benefits["benefits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["code"].as_str().unwrap(), b["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        list,
        [
            ("newsletter", "tier:status:base"),
            ("lounge", "promotion:welcome")
        ],
        "{benefits}"
    );
    assert_eq!(benefits["benefits"][1]["value"], "2");
    assert!(benefits["benefits"][1]["valid_until"].is_string());
    let (status, _, body) = s
        .call(
            reqwest::Method::GET,
            "/programs/shop/members/nobody/badges",
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_member"))
    );
}

/// A prepaid partner over HTTP: written and topped up by the manager, debited by its
/// customers' accruals, refusing one its pack cannot cover with a problem the integrator
/// can act on, raising one low-pack event; its own token reads its figures and ledger and
/// nothing of another partner's.
async fn a_prepaid_partner_pays_from_its_pack_and_sees_only_itself(s: Server) {
    s.setup(&["m"]).await;
    let put = |code: &str, body: Value| {
        let s = &s;
        let path = format!("/programs/shop/partners/{code}");
        async move { s.call(reqwest::Method::PUT, &path, Some(body)).await }
    };
    let (status, _, body) = put(
        "cars",
        json!({"name": "Car rental", "roles": "earn", "billing": "prepaid",
               "cost_per_point": "0.008", "alert_below": 100}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["pack"].as_i64(), body["when_empty"].as_str()),
        (Some(0), Some("refuse"))
    );
    let (status, _, body) = put(
        "bad",
        json!({"name": "Bad", "roles": "earn", "currency": "nope", "cost_per_point": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_partner");
    let detail = body["detail"].as_str().unwrap();
    for path in ["currency", "billing", "cost_per_point"] {
        assert!(detail.contains(path), "{detail}");
    }
    put(
        "hotel",
        json!({"name": "Hotel", "roles": "burn", "reimbursement_per_point": "0.01"}),
    )
    .await;

    let top_up = json!({"top_up_id": "INV-7", "points": 250});
    let (status, body) = s
        .post("/programs/shop/partners/cars/top-ups", top_up.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["pack"].as_i64(), body["amount"].as_i64()),
        (Some(250), Some(200))
    );
    let (status, _, body) = s
        .call(
            reqwest::Method::POST,
            "/programs/shop/partners/cars/top-ups",
            Some(top_up),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a retry: {body}");
    assert_eq!(body["replayed"], true);

    let earn = |id: &str, amount: &str| {
        json!({"external_id": id, "member": "m", "type": "purchase", "occurred_at": chrono::Utc::now().to_rfc3339(),
               "amount": amount, "currency": "EUR", "partner": "cars"})
    };
    let (status, body) = s.post("/programs/shop/journals", earn("r1", "200")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s.post("/programs/shop/journals", earn("r2", "80")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "partner_pack_empty");
    assert_eq!(
        s.available("m").await,
        200,
        "the refused journal changed nothing"
    );
    let liability = s.get("/programs/shop/liability").await;
    assert_eq!(
        liability["currencies"][0]["outstanding_points"], 200,
        "{liability}"
    );
    assert_eq!(liability["partners"][0]["partner"], "cars", "{liability}");
    assert_eq!(liability["partners"][0]["outstanding_points"], 200);
    let events = s.get("/programs/shop/events").await;
    let pack_low: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "partner.pack_low")
        .collect();
    assert_eq!(pack_low.len(), 1, "{events}");

    // The partner's own token: its figures and ledger, nobody else's, and no events.
    let token = s
        .token(json!({"name": "cars-pos", "role": "partner", "partner": "cars", "program": "shop"}))
        .await;
    let (status, body) = s
        .call_as(
            &token,
            reqwest::Method::GET,
            "/programs/shop/partners/cars",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["pack"].as_i64(),
            body["points_issued"].as_i64(),
            body["owed_by_partner"].as_i64()
        ),
        (Some(50), Some(200), Some(200))
    );
    let (_, body) = s
        .call_as(
            &token,
            reqwest::Method::GET,
            "/programs/shop/partners/cars/entries",
            None,
        )
        .await;
    let kinds: Vec<&str> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["accrual", "top_up"]);
    assert_eq!(body["entries"][0]["journal"], "r1");
    for path in [
        "/programs/shop/partners/hotel",
        "/programs/shop/events",
        "/programs/shop/liability",
    ] {
        let (status, body) = s.call_as(&token, reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    // Its statement for the day, as JSON and as CSV.
    let day = |d: i64| {
        (chrono::Utc::now() + chrono::Duration::days(d))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let period = format!("from={}&to={}", day(-1), day(1));
    let (status, body) = s
        .call_as(
            &token,
            reqwest::Method::GET,
            &format!("/programs/shop/partners/cars/settlement?{period}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "open");
    assert_eq!(
        (
            body["totals"]["points_issued"].as_i64(),
            body["totals"]["points_bought"].as_i64(),
            body["totals"]["net"].as_i64()
        ),
        (Some(200), Some(250), Some(200)),
        "{body}"
    );
    let csv = s
        .http
        .get(s.url(&format!(
            "/programs/shop/partners/cars/settlement?{period}&format=csv"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        csv.headers()["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    let csv = csv.text().await.unwrap();
    assert!(csv.contains("period,top_up,1,250,250,200\n"), "{csv}");
    // Closing is the manager's: not before the period is over.
    let (status, body) = s
        .call_as(
            &token,
            reqwest::Method::POST,
            "/programs/shop/partners/cars/settlements",
            Some(json!({"from": day(-1), "to": day(1)})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = s
        .post(
            "/programs/shop/partners/cars/settlements",
            json!({"from": day(-1), "to": day(1)}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "period_not_over");
}

/// A member files a claim from its own token; the agent's double click approves it once;
/// the member sees the decision; a duplicate and a processed transaction are refused.
async fn a_member_claims_missing_points_and_an_agent_decides_once(s: Server) {
    s.setup(&["m", "n"]).await;
    let member = s
        .token(json!({"name": "m-portal", "role": "member", "member": "m", "program": "shop"}))
        .await;
    let agent = s
        .token(json!({"name": "agent-ann", "role": "agent", "program": "shop"}))
        .await;
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let body = json!({"member": "m", "reference": "RCPT-77", "occurred_at": yesterday, "amount": "42.00",
                      "partner": "cars", "note": "card not scanned"});
    let (status, filed) = s
        .call_as(
            &member,
            reqwest::Method::POST,
            "/programs/shop/claims",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    assert_eq!(
        (filed["status"].as_str(), filed["amount"].as_str()),
        (Some("open"), Some("42.00"))
    );
    let id = filed["claim_id"].as_str().unwrap().to_owned();
    let (status, again) = s
        .call_as(
            &member,
            reqwest::Method::POST,
            "/programs/shop/claims",
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["code"], "claim_exists");
    // Not for another member.
    let (status, _) = s
        .call_as(
            &member,
            reqwest::Method::POST,
            "/programs/shop/claims",
            Some(json!({"member": "n", "reference": "X", "occurred_at": yesterday, "amount": "1"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A member cannot decide; the agent approves twice: processed once.
    let approve = format!("/programs/shop/claims/{id}/approve");
    let (status, _) = s
        .call_as(&member, reqwest::Method::POST, &approve, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, first) = s
        .call_as(&agent, reqwest::Method::POST, &approve, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["status"], "approved");
    let (status, second) = s
        .call_as(&agent, reqwest::Method::POST, &approve, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["replayed"], true);
    assert_eq!(s.available("m").await, 42);
    let journal = s.get("/programs/shop/journals/RCPT-77").await;
    assert_eq!(journal["status"], "processed", "{journal}");
    // The member sees the decision; the same transaction cannot be claimed again.
    let (_, mine) = s
        .call_as(&member, reqwest::Method::GET, "/programs/shop/claims", None)
        .await;
    assert_eq!(mine["claims"][0]["status"], "approved", "{mine}");
    let (status, dup) = s
        .post(
            "/programs/shop/claims",
            json!({"member": "n", "reference": "RCPT-77", "occurred_at": yesterday, "amount": "42.00"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");
    assert_eq!(dup["code"], "claim_already_processed");
}

/// `GET …/analytics/promotions/{code}`: members held out by the control group get nothing,
/// and the report counts both groups, their spend and the cost; bad windows and unknown
/// promotions are refused clearly.
async fn a_promotion_is_measured_against_its_control_group(s: Server) {
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop",
            Some(json!({"name": "Shop", "time_zone": "UTC", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "value_per_point": "0.01", "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}], "days_before_enrolment": 3650},
                "promotions": [{"code": "bonus", "name": "Bonus", "status": "active", "control_group": {"share": "0.3"},
                                "actions": [{"type": "fixed", "currency": "points", "points": 50}]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    let (mut treated, mut control) = (0, 0);
    for m in 0..40 {
        let member = format!("m{m}");
        let (status, body) = s
            .post("/programs/shop/members", json!({"member": member}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = s
            .post(
                "/programs/shop/journals",
                json!({"external_id": format!("p{m}"), "member": member, "type": "purchase",
                       "occurred_at": chrono::Utc::now().to_rfc3339(), "amount": "10", "currency": "EUR"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let verdict = body["promotions"][0]["result"].as_str().unwrap().to_owned();
        let points = s.available(&member).await;
        match verdict.as_str() {
            "control" => {
                assert_eq!(points, 10, "held out: the base only");
                control += 1;
            }
            "applied" => {
                assert_eq!(points, 60);
                treated += 1;
            }
            other => panic!("{other}"),
        }
    }
    assert!(control > 0 && treated > 0);
    let from = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let report = s
        .get(&format!(
            "/programs/shop/analytics/promotions/bonus?from={from}"
        ))
        .await;
    assert_eq!(report["treated_members"], treated, "{report}");
    assert_eq!(report["control_members"], control, "{report}");
    assert_eq!(report["treated_mean_spend"], 1000, "{report}");
    assert_eq!(report["lift_per_member"], 0, "{report}");
    assert_eq!(
        report["cost"],
        50 * treated,
        "50 points at €0.01 each: {report}"
    );
    assert_eq!(report["roi"], -1.0, "{report}");
    assert_eq!(report["conclusion"], "sample_too_small", "{report}");
    let (status, _, body) = s
        .call(
            reqwest::Method::GET,
            &format!("/programs/shop/analytics/promotions/nope?from={from}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "unknown_promotion");
    // The key figures count the same journals: 40 members, all active, 10 base points
    // each and the bonus for the treated.
    let kpis = s.get("/programs/shop/analytics/kpis?months=2").await;
    assert_eq!(kpis["members"], 40, "{kpis}");
    assert_eq!(kpis["active_30"], 40, "{kpis}");
    assert_eq!(kpis["enrolments"], 40, "{kpis}");
    assert_eq!(
        kpis["currencies"][0]["issued"],
        400 + 50 * treated,
        "{kpis}"
    );
    assert_eq!(
        kpis["currencies"][0]["outstanding_available"],
        400 + 50 * treated
    );
    assert_eq!(kpis["currencies"][0]["redemption_rate"], 0.0, "{kpis}");
    assert_eq!(kpis["months"].as_array().unwrap().len(), 2);
    let csv = s
        .http
        .get(s.url("/programs/shop/analytics/kpis?format=csv"))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        csv.headers()["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    let csv = csv.text().await.unwrap();
    assert!(
        csv.starts_with("month,currency,enrolments,issued,redeemed,expired\n"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        1 + 12,
        "a row per month and currency: {csv}"
    );
    let (status, _, body) = s
        .call(
            reqwest::Method::GET,
            "/programs/shop/analytics/kpis?months=0",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = s
        .call(
            reqwest::Method::GET,
            "/programs/shop/analytics/promotions/bonus",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_query");
}

/// Segments through the API: a condition that reads a field members do not have is refused
/// with its path; the jobs refresh the segments; the list shows counts (JSON and CSV), a
/// member's view shows their segments and scores, and a promotion for a segment rewards
/// only its members.
async fn segments_are_refreshed_by_the_jobs_and_gate_promotions(s: Server) {
    let program = |condition: &str| {
        json!({"name": "Shop", "time_zone": "UTC", "money_currency": "EUR",
            "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
            "earning": {"base": [{"currency": "points", "rate": "1"}], "days_before_enrolment": 3650},
            "promotions": [{"code": "vip-bonus", "name": "VIP bonus", "status": "active",
                            "eligibility": {"segments": ["vip"]},
                            "actions": [{"type": "fixed", "currency": "points", "points": 25}]}],
            "segments": [{"code": "vip", "name": "VIP", "condition": condition},
                         {"code": "paris", "name": "Paris", "condition": "member.profile.city == 'Paris'"}]})
    };
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop",
            Some(program("member.spend_356d >= 100.0")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("segments[0].condition")
            && body.to_string().contains("spend_356d"),
        "{body}"
    );
    let (status, _, body) = s
        .call(
            reqwest::Method::PUT,
            "/programs/shop",
            Some(program("member.spend_365d >= 100.0")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let now = chrono::Utc::now();
    for (member, city, amount) in [("big", "Paris", "150"), ("small", "Lyon", "20")] {
        let (status, body) = s
            .post(
                "/programs/shop/members",
                json!({"member": member, "profile": {"city": city}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = s
            .post(
                "/programs/shop/journals",
                json!({"external_id": format!("{member}-1"), "member": member, "type": "purchase",
                       "occurred_at": (now - chrono::Duration::days(3)).to_rfc3339(), "amount": amount, "currency": "EUR"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["promotions"], json!([]), "no segment yet: {body}");
    }
    let listed = s.get("/programs/shop/segments").await;
    assert!(listed.get("as_of").is_none(), "not refreshed yet: {listed}");
    assert_eq!(listed["segments"][0]["members"], 0, "{listed}");

    let (status, jobs) = s.post("/programs/shop/jobs/run", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    assert_eq!(jobs["segments"], json!({"vip": 1, "paris": 1}), "{jobs}");

    let listed = s.get("/programs/shop/segments").await;
    assert_eq!(listed["members"], 2, "{listed}");
    assert_eq!(listed["segments"][0]["code"], "vip");
    assert_eq!(listed["segments"][0]["members"], 1, "{listed}");
    assert_eq!(
        listed["segments"][0]["condition"],
        "member.spend_365d >= 100.0"
    );
    let csv = s
        .http
        .get(s.url("/programs/shop/segments?format=csv"))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("segment,name,members,unevaluable,as_of"));
    assert!(lines.next().unwrap().starts_with("vip,VIP,1,0,"), "{csv}");

    let big = s.get("/programs/shop/members/big/segments").await;
    assert_eq!(big["segments"], json!(["paris", "vip"]), "{big}");
    assert_eq!(big["spend_90d"], 15_000, "{big}");
    assert_eq!(big["purchases_90d"], 1, "{big}");
    assert!(big["rfm"].is_string(), "{big}");

    // The refreshed segments gate the promotion: the VIP gets the bonus, the other not.
    for (member, want) in [("big", Some("applied")), ("small", None)] {
        let (status, body) = s
            .post(
                "/programs/shop/journals",
                json!({"external_id": format!("{member}-2"), "member": member, "type": "purchase",
                       "occurred_at": chrono::Utc::now().to_rfc3339(), "amount": "5", "currency": "EUR"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(
            body["promotions"][0]["result"].as_str(),
            want,
            "{member}: {body}"
        );
    }
    let (status, _, body) = s
        .call(
            reqwest::Method::GET,
            "/programs/shop/members/nobody/segments",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// `fidelis simulate --target`: the program is created on the server from the definition,
/// every simulated member enrolled and every journal sent; the server processes what the
/// simulation generated (none refused), and a second run replays.
async fn simulate_sends_its_population_to_a_running_server(s: Server) {
    let base = s.base.clone();
    let run = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fidelis"))
            .args([
                "simulate",
                "retail",
                "--members",
                "60",
                "--months",
                "4",
                "--start",
                "2026-01",
                "--seed",
                "7",
                "--format",
                "json",
                "--target",
                &base,
                "--token",
                common::ADMIN,
                "--program",
                "sim",
                "--connections",
                "3",
            ])
            .output()
            .unwrap()
    };
    let again = run.clone();
    let first = tokio::task::spawn_blocking(run).await.unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(first.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&first.stdout).unwrap();
    let journals: u64 = report["runs"][0]["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["journals"].as_u64().unwrap())
        .sum();
    assert!(journals > 50, "{report}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("target:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("program created"), "{line}");
    assert!(line.contains("60 members enrolled"), "{line}");
    assert!(
        line.ends_with(&format!("{journals} processed, 0 replayed, 0 rejected")),
        "{line}"
    );
    assert!(
        line.contains(&format!("{journals} journals sent")),
        "{journals} journals: {line}"
    );
    let kpis = s.get("/programs/sim/analytics/kpis?months=24").await;
    assert_eq!(kpis["members"], 60, "{kpis}");
    assert!(
        kpis["currencies"][0]["issued"].as_i64().unwrap() > 0,
        "{kpis}"
    );
    let second = tokio::task::spawn_blocking(again).await.unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{journals} replayed")),
        "the same journals again are replays: {stderr}"
    );
}
