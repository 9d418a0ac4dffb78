//! The authorization matrix: every route of the API × every role (and no token), on the
//! router itself (no socket). The routes come from the OpenAPI document, and the test
//! fails if the matrix misses one, so a new route cannot go unchecked.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use fidelis_store::{Actor, Enrollment, NewToken, Store};
use fidelis_web::auth::{new_token, token_hash};
use fidelis_web::{AppState, ServerConfig, app};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ROLES: [&str; 6] = [
    "admin",
    "program_manager",
    "agent",
    "partner",
    "member",
    "none",
];

/// Operational endpoints answer everyone, without a token too.
const PUBLIC: &[&str] = &ROLES;

/// One operation and who may do it. `body` is sent as JSON.
struct Case {
    method: Method,
    path: &'static str,
    template: &'static str,
    body: Option<Value>,
    allowed: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let purchase = |id: &str| json!({"external_id": id, "member": "m1", "type": "purchase", "occurred_at": "2026-11-20T10:00:00Z", "amount": "10", "currency": "EUR"});
    let all: &[&str] = &["admin", "program_manager", "agent", "partner", "member"];
    let staff: &[&str] = &["admin", "program_manager", "agent"];
    let managers: &[&str] = &["admin", "program_manager"];
    let writers: &[&str] = &["admin", "program_manager", "partner"];
    let readers: &[&str] = &["admin", "program_manager", "agent", "member"];
    let spenders: &[&str] = &["admin", "program_manager", "agent", "partner", "member"];
    let journal_readers: &[&str] = &["admin", "program_manager", "agent", "partner", "member"];
    let _ = all;
    vec![
        Case {
            method: Method::GET,
            path: "/api/v1/programs",
            template: "/api/v1/programs",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/templates",
            template: "/api/v1/templates",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop",
            template: "/api/v1/programs/{program}",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop",
            template: "/api/v1/programs/{program}",
            body: Some(shop_definition()),
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/new-{role}/from-template/retail",
            template: "/api/v1/programs/{program}/from-template/{template}",
            body: None,
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members",
            template: "/api/v1/programs/{program}/members",
            body: Some(json!({"member": "new-{role}"})),
            allowed: staff,
        },
        // Listing members is staff work: a partner or a member sees no one else.
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members?q=m&sort=-enrolled_at",
            template: "/api/v1/programs/{program}/members",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1",
            template: "/api/v1/programs/{program}/members/{member}",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop/members/m2/profile",
            template: "/api/v1/programs/{program}/members/{member}/profile",
            body: Some(json!({"profile": {"name": "By {role}"}})),
            allowed: staff,
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop/members/m2/status",
            template: "/api/v1/programs/{program}/members/{member}/status",
            body: Some(json!({"status": "active"})),
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/balances",
            template: "/api/v1/programs/{program}/members/{member}/balances",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/ledger",
            template: "/api/v1/programs/{program}/members/{member}/ledger",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/promotions",
            template: "/api/v1/programs/{program}/members/{member}/promotions",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/m1/promotions/welcome/join",
            template: "/api/v1/programs/{program}/members/{member}/promotions/{promotion}/join",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/m1/portal-link",
            template: "/api/v1/programs/{program}/members/{member}/portal-link",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/tiers",
            template: "/api/v1/programs/{program}/members/{member}/tiers",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop/members/m1/tiers/status",
            template: "/api/v1/programs/{program}/members/{member}/tiers/{group}",
            body: Some(json!({"tier": "gold", "reason": "goodwill"})),
            allowed: &["admin", "program_manager", "agent"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/m1/transfers",
            template: "/api/v1/programs/{program}/members/{member}/transfers",
            body: Some(
                json!({"external_id": "tr-{role}", "to": "m2", "currency": "points", "points": 1}),
            ),
            allowed: &["admin", "program_manager", "agent", "member"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/dup-{role}/merge",
            template: "/api/v1/programs/{program}/members/{member}/merge",
            body: Some(json!({"into": "m2"})),
            allowed: staff,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/m1/reinstatements",
            template: "/api/v1/programs/{program}/members/{member}/reinstatements",
            body: Some(
                json!({"external_id": "ri-{role}", "currency": "points", "reason": "goodwill"}),
            ),
            allowed: &["admin", "program_manager", "agent"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/groups",
            template: "/api/v1/programs/{program}/groups",
            body: Some(
                json!({"group": "g-{role}", "name": "G", "share_percent": 50, "redeem": "owner", "owner": "m2"}),
            ),
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/groups/home",
            template: "/api/v1/programs/{program}/groups/{group}",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/groups/home/members",
            template: "/api/v1/programs/{program}/groups/{group}/members",
            body: Some(json!({"member": "m2"})),
            allowed: staff,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/groups/home/redemptions",
            template: "/api/v1/programs/{program}/groups/{group}/redemptions",
            body: Some(
                json!({"external_id": "gr-{role}", "member": "m1", "currency": "points", "points": 1}),
            ),
            allowed: &["admin", "program_manager", "agent", "member"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/m1/redemptions",
            template: "/api/v1/programs/{program}/members/{member}/redemptions",
            body: Some(json!({"external_id": "rd-{role}", "currency": "points", "points": 1})),
            allowed: spenders,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/holds",
            template: "/api/v1/programs/{program}/holds",
            body: Some(
                json!({"order_id": "h-{role}", "member": "m1", "currency": "points", "points": 1}),
            ),
            allowed: spenders,
        },
        // Another member's or partner's hold answers 404, as one that does not exist.
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/holds/hs-seed",
            template: "/api/v1/programs/{program}/holds/{order}",
            body: None,
            allowed: journal_readers,
        },
        // A partner gets a quote without the member's balance.
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/quote?currency=points&amount=10.00",
            template: "/api/v1/programs/{program}/members/{member}/quote",
            body: None,
            allowed: spenders,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/holds/hc-{role}/capture",
            template: "/api/v1/programs/{program}/holds/{order}/capture",
            body: None,
            allowed: spenders,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/holds/hr-{role}/release",
            template: "/api/v1/programs/{program}/holds/{order}/release",
            body: None,
            allowed: spenders,
        },
        // Vouchers: issuing is an agent's goodwill; reading and using them is spending (a
        // member only its own, a partner the codes its customers present); cancelling is
        // staff's. The same voucher serves every case (a refusal by its state is not 403).
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/vouchers",
            template: "/api/v1/programs/{program}/vouchers",
            body: Some(json!({"definition": "gift", "member": "m1", "key": "v-{role}"})),
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/vouchers/{voucher}",
            template: "/api/v1/programs/{program}/vouchers/{code}",
            body: None,
            allowed: journal_readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/badges",
            template: "/api/v1/programs/{program}/members/{member}/badges",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/benefits",
            template: "/api/v1/programs/{program}/members/{member}/benefits",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/vouchers",
            template: "/api/v1/programs/{program}/members/{member}/vouchers",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/vouchers/{voucher}/redeem",
            template: "/api/v1/programs/{program}/vouchers/{code}/redeem",
            body: Some(json!({"key": "vr-{role}", "amount": "1.00"})),
            allowed: spenders,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/vouchers/{voucher}/reserve",
            template: "/api/v1/programs/{program}/vouchers/{code}/reserve",
            body: Some(json!({"key": "vo-{role}", "amount": "1.00"})),
            allowed: spenders,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/vouchers/{voucher}/redeem-reserved",
            template: "/api/v1/programs/{program}/vouchers/{code}/redeem-reserved",
            body: Some(json!({"key": "vo-{role}"})),
            allowed: spenders,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/vouchers/{voucher}/reinstate",
            template: "/api/v1/programs/{program}/vouchers/{code}/reinstate",
            body: Some(json!({"key": "vo-{role}"})),
            allowed: spenders,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/vouchers/{voucher}/cancel",
            template: "/api/v1/programs/{program}/vouchers/{code}/cancel",
            body: None,
            allowed: staff,
        },
        // The catalog: managers write items; whoever may spend reads them; members and
        // staff order (a partner does not: the catalog is the program's); a member reads its
        // own orders, a partner those it fulfils, and fulfils them; staff cancel.
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/catalog",
            template: "/api/v1/programs/{program}/catalog",
            body: None,
            allowed: spenders,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/catalog/mug",
            template: "/api/v1/programs/{program}/catalog/{item}",
            body: None,
            allowed: spenders,
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop/catalog/mug-{role}",
            template: "/api/v1/programs/{program}/catalog/{item}",
            body: Some(json!({"name": "Mug", "currency": "points", "points": 1, "partner": "p1"})),
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/orders",
            template: "/api/v1/programs/{program}/orders",
            body: Some(json!({"order_id": "op-{role}", "member": "m1", "item": "mug"})),
            allowed: readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/orders",
            template: "/api/v1/programs/{program}/orders",
            body: None,
            allowed: journal_readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/orders/os-seed",
            template: "/api/v1/programs/{program}/orders/{order}",
            body: None,
            allowed: journal_readers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/orders/oc-{role}/cancel",
            template: "/api/v1/programs/{program}/orders/{order}/cancel",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/orders/of-{role}/fulfil",
            template: "/api/v1/programs/{program}/orders/{order}/fulfil",
            body: None,
            allowed: &["admin", "program_manager", "agent", "partner"],
        },
        // Partners: managers write them and top up packs; staff read them, a partner
        // token its own (p1) and no other; events are for staff.
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/partners",
            template: "/api/v1/programs/{program}/partners",
            body: None,
            allowed: &["admin", "program_manager", "agent", "partner"],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/partners/p1",
            template: "/api/v1/programs/{program}/partners/{partner}",
            body: None,
            allowed: &["admin", "program_manager", "agent", "partner"],
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop/partners/pp-{role}",
            template: "/api/v1/programs/{program}/partners/{partner}",
            body: Some(
                json!({"name": "Bank", "roles": "earn", "billing": "postpaid", "cost_per_point": "0.01"}),
            ),
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/partners/pk/top-ups",
            template: "/api/v1/programs/{program}/partners/{partner}/top-ups",
            body: Some(json!({"top_up_id": "t-{role}", "points": 100})),
            allowed: managers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/partners/p1/entries",
            template: "/api/v1/programs/{program}/partners/{partner}/entries",
            body: None,
            allowed: &["admin", "program_manager", "agent", "partner"],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/partners/p1/settlement?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
            template: "/api/v1/programs/{program}/partners/{partner}/settlement",
            body: None,
            allowed: &["admin", "program_manager", "agent", "partner"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/partners/pp-{role}/settlements",
            template: "/api/v1/programs/{program}/partners/{partner}/settlements",
            body: Some(json!({"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"})),
            allowed: managers,
        },
        // Claims: members file for themselves, staff for anyone, partners not; agents and
        // managers decide; members read their own.
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/claims",
            template: "/api/v1/programs/{program}/claims",
            body: Some(
                json!({"member": "m1", "reference": "cl-{role}", "occurred_at": "2026-11-20T10:00:00Z", "amount": "5"}),
            ),
            allowed: readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/claims",
            template: "/api/v1/programs/{program}/claims",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/claims/CL-NONE",
            template: "/api/v1/programs/{program}/claims/{claim}",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/claims/CL-NONE/approve",
            template: "/api/v1/programs/{program}/claims/{claim}/approve",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/claims/CL-NONE/reject",
            template: "/api/v1/programs/{program}/claims/{claim}/reject",
            body: Some(json!({"reason": "no receipt"})),
            allowed: staff,
        },
        // Fraud review: staff read the queue, agents and managers decide and flag.
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/held-journals",
            template: "/api/v1/programs/{program}/held-journals",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/held-journals/H-NONE",
            template: "/api/v1/programs/{program}/held-journals/{journal}",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/held-journals/H-NONE/release",
            template: "/api/v1/programs/{program}/held-journals/{journal}/release",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/held-journals/H-NONE/reject",
            template: "/api/v1/programs/{program}/held-journals/{journal}/reject",
            body: Some(json!({"note": "a test"})),
            allowed: staff,
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop/members/m1/flag",
            template: "/api/v1/programs/{program}/members/{member}/flag",
            body: Some(json!({"reason": "checked by {role}"})),
            allowed: staff,
        },
        Case {
            method: Method::DELETE,
            path: "/api/v1/programs/shop/members/m1/flag",
            template: "/api/v1/programs/{program}/members/{member}/flag",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/liability",
            template: "/api/v1/programs/{program}/liability",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/analytics/promotions/welcome?from=2026-01-01T00:00:00Z",
            template: "/api/v1/programs/{program}/analytics/promotions/{promotion}",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/analytics/kpis",
            template: "/api/v1/programs/{program}/analytics/kpis",
            body: None,
            allowed: staff,
        },
        // A member's data: staff and the member itself read it; only managers erase it
        // (an unknown member, so the matrix erases nobody).
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/export",
            template: "/api/v1/programs/{program}/members/{member}/export",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/nobody/erase",
            template: "/api/v1/programs/{program}/members/{member}/erase",
            body: None,
            allowed: managers,
        },
        // Consents: staff and the member itself; templates and messages: staff reads,
        // managers write.
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/consents",
            template: "/api/v1/programs/{program}/members/{member}/consents",
            body: None,
            allowed: readers,
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop/members/m1/consents",
            template: "/api/v1/programs/{program}/members/{member}/consents",
            body: Some(json!({"email": true})),
            allowed: readers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/message-templates",
            template: "/api/v1/programs/{program}/message-templates",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::PUT,
            path: "/api/v1/programs/shop/message-templates/member.enrolled/en",
            template: "/api/v1/programs/{program}/message-templates/{event_type}/{language}",
            body: Some(json!({"subject": "Hi {{ member.id }}", "text": "Welcome ({role})"})),
            allowed: managers,
        },
        Case {
            method: Method::DELETE,
            path: "/api/v1/programs/shop/message-templates/member.enrolled/ja",
            template: "/api/v1/programs/{program}/message-templates/{event_type}/{language}",
            body: None,
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/message-templates/preview",
            template: "/api/v1/programs/{program}/message-templates/preview",
            body: Some(json!({"event_type": "member.enrolled", "language": "ja"})),
            allowed: staff,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/message-templates/preview",
            template: "/api/v1/programs/{program}/message-templates/preview",
            body: Some(
                json!({"event_type": "member.enrolled", "language": "ja", "subject": "{role}", "text": "x"}),
            ),
            allowed: managers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/messages",
            template: "/api/v1/programs/{program}/messages",
            body: None,
            allowed: staff,
        },
        // Webhooks send the program's events (members' data included) to an address of
        // the operator's choosing: managers only.
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/webhooks",
            template: "/api/v1/programs/{program}/webhooks",
            body: None,
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/webhooks",
            template: "/api/v1/programs/{program}/webhooks",
            body: Some(json!({"url": "http://127.0.0.1:9/{role}", "events": ["points.earned"]})),
            allowed: managers,
        },
        Case {
            method: Method::PATCH,
            path: "/api/v1/programs/shop/webhooks/999999",
            template: "/api/v1/programs/{program}/webhooks/{webhook}",
            body: Some(json!({"active": false})),
            allowed: managers,
        },
        Case {
            method: Method::DELETE,
            path: "/api/v1/programs/shop/webhooks/999999",
            template: "/api/v1/programs/{program}/webhooks/{webhook}",
            body: None,
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/webhooks/999999/rotate-secret",
            template: "/api/v1/programs/{program}/webhooks/{webhook}/rotate-secret",
            body: Some(json!({})),
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/webhooks/999999/test",
            template: "/api/v1/programs/{program}/webhooks/{webhook}/test",
            body: None,
            allowed: managers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/webhooks/999999/deliveries?status=dead",
            template: "/api/v1/programs/{program}/webhooks/{webhook}/deliveries",
            body: None,
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/webhooks/999999/replay",
            template: "/api/v1/programs/{program}/webhooks/{webhook}/replay",
            body: Some(json!({})),
            allowed: managers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/segments",
            template: "/api/v1/programs/{program}/segments",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/members/m1/segments",
            template: "/api/v1/programs/{program}/members/{member}/segments",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/events",
            template: "/api/v1/programs/{program}/events",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/m1/adjustments",
            template: "/api/v1/programs/{program}/members/{member}/adjustments",
            body: Some(
                json!({"external_id": "adj-{role}", "currency": "points", "points": 5, "reason": "goodwill"}),
            ),
            allowed: &["admin", "program_manager", "agent"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/journals",
            template: "/api/v1/programs/{program}/journals",
            body: Some(purchase("j-{role}")),
            allowed: writers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/journals/batch",
            template: "/api/v1/programs/{program}/journals/batch",
            body: None,
            allowed: writers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/journals/p1-seed",
            template: "/api/v1/programs/{program}/journals/{external_id}",
            body: None,
            allowed: journal_readers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/journals/c-{role}/cancel",
            template: "/api/v1/programs/{program}/journals/{external_id}/cancel",
            body: None,
            allowed: &["admin", "program_manager", "agent"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/simulate",
            template: "/api/v1/programs/{program}/simulate",
            body: Some(purchase("sim")),
            allowed: writers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/members/openings",
            template: "/api/v1/programs/{program}/members/openings",
            body: Some(
                json!({"member": "open-{role}", "balances": [{"currency": "points", "points": 5, "earned_at": "2026-01-01T00:00:00Z"}]}),
            ),
            allowed: &["admin", "program_manager", "agent"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/expiry-extensions",
            template: "/api/v1/programs/{program}/expiry-extensions",
            body: Some(json!({"external_id": "ext-{role}", "currency": "points",
                "expiring_from": "2030-01-01T00:00:00Z", "expiring_until": "2030-02-01T00:00:00Z",
                "months": 6, "reason": "goodwill"})),
            allowed: managers,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/programs/shop/scheduled-rewards?as_of=2027-01-01T00:00:00Z",
            template: "/api/v1/programs/{program}/scheduled-rewards",
            body: None,
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/programs/shop/jobs/run",
            template: "/api/v1/programs/{program}/jobs/run",
            body: Some(json!({})),
            allowed: managers,
        },
        Case {
            method: Method::POST,
            path: "/api/v1/tokens",
            template: "/api/v1/tokens",
            body: Some(json!({"name": "t-{role}", "role": "agent"})),
            allowed: &["admin"],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/tokens",
            template: "/api/v1/tokens",
            body: None,
            allowed: &["admin"],
        },
        Case {
            method: Method::DELETE,
            path: "/api/v1/tokens/999999",
            template: "/api/v1/tokens/{id}",
            body: None,
            allowed: &["admin"],
        },
        Case {
            method: Method::POST,
            path: "/api/v1/users",
            template: "/api/v1/users",
            body: Some(
                json!({"email": "{role}@example.com", "password": "a long enough password", "role": "agent"}),
            ),
            allowed: &["admin"],
        },
        Case {
            method: Method::GET,
            path: "/api/v1/audit",
            template: "/api/v1/audit",
            body: None,
            allowed: staff,
        },
        Case {
            method: Method::GET,
            path: "/openapi.json",
            template: "/openapi.json",
            body: None,
            allowed: PUBLIC,
        },
        Case {
            method: Method::GET,
            path: "/api/v1/openapi.json",
            template: "/api/v1/openapi.json",
            body: None,
            allowed: PUBLIC,
        },
        Case {
            method: Method::GET,
            path: "/schemas/program.schema.json",
            template: "/schemas/program.schema.json",
            body: None,
            allowed: PUBLIC,
        },
        Case {
            method: Method::GET,
            path: "/healthz",
            template: "/healthz",
            body: None,
            allowed: PUBLIC,
        },
        Case {
            method: Method::GET,
            path: "/readyz",
            template: "/readyz",
            body: None,
            allowed: PUBLIC,
        },
        Case {
            method: Method::GET,
            path: "/metrics",
            template: "/metrics",
            body: None,
            allowed: PUBLIC,
        },
    ]
}

fn shop_definition() -> Value {
    json!({"code": "shop", "name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
           "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"},
                           "transfer": {"daily_limit": 1000}, "reinstate_within_days": 30},
                          {"code": "status", "name": "Status", "kind": "qualifying", "expiry": {"policy": "never"}}],
           "earning": {"base": [{"currency": "points", "rate": "1"}, {"currency": "status", "rate": "1"}]},
           "tier_groups": [{"code": "status", "currency": "status",
                            "tiers": [{"code": "member", "threshold": 0}, {"code": "gold", "threshold": 1000}]}],
           "vouchers": [{"code": "gift", "name": "Gift card", "value": {"fixed": "1000.00"}}]})
}

struct World {
    router: axum::Router,
    tokens: Vec<(&'static str, Option<String>)>,
    partner_other: String,
    member_other: String,
    /// The code of a gift voucher of member m1 (every voucher case uses it).
    voucher: String,
    _db: fidelis_testkit::SqliteDb,
}

async fn token(store: &Store, role: &str, partner: Option<&str>, member: Option<&str>) -> String {
    let token = new_token();
    let program = (role == "partner" || role == "member").then(|| "shop".to_owned());
    store
        .create_token(
            &NewToken {
                name: format!("{role}-{}", partner.or(member).unwrap_or("")),
                token_hash: token_hash(&token),
                role: role.into(),
                program,
                partner: partner.map(str::to_owned),
                member: member.map(str::to_owned),
                scopes: None,
            },
            &Actor::cli().entry(Utc::now(), "token.create", None, None),
        )
        .await
        .unwrap();
    token
}

async fn world() -> World {
    let db = fidelis_testkit::sqlite_db();
    let store = Store::connect(&db.url).await.unwrap();
    let doc = serde_json::from_value(shop_definition()).unwrap();
    let program = fidelis_core::program::Program::compile(&doc, None).unwrap();
    let (loaded, _) = store
        .put_program(&program, Utc::now(), &Actor::cli())
        .await
        .unwrap();
    let duplicates = ROLES.map(|r| format!("dup-{r}"));
    for m in ["m1", "m2"]
        .into_iter()
        .chain(duplicates.iter().map(String::as_str))
    {
        store
            .enroll(
                &loaded,
                &Enrollment {
                    external_id: fidelis_core::ids::ExternalId::parse(m).unwrap(),
                    profile: json!({}),
                    enrolled_at: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                        .expect("an instant")
                        .with_timezone(&Utc),
                },
                Utc::now(),
            )
            .await
            .unwrap();
    }
    store
        .create_group(
            &loaded,
            &fidelis_core::ids::ExternalId::parse("home").unwrap(),
            "Home",
            // 1 % of a 50-point purchase rounds down to nothing: m1's balances stay whole.
            1,
            fidelis_store::RedeemRule::Owner,
            "m1",
            Utc::now(),
            &Actor::cli(),
        )
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for role in ROLES {
        let t = match role {
            "none" => None,
            "partner" => Some(token(&store, role, Some("p1"), None).await),
            "member" => Some(token(&store, role, None, Some("m1")).await),
            _ => Some(token(&store, role, None, None).await),
        };
        tokens.push((role, t));
    }
    let partner_other = token(&store, "partner", Some("p2"), None).await;
    let member_other = token(&store, "member", None, Some("m2")).await;
    let router = app(AppState::new(store.clone(), ServerConfig::default()));
    // Journals the matrix reads and cancels: one of partner p1 for each role's cancel.
    let admin = tokens[0].1.clone().unwrap();
    let mut journals = vec!["p1-seed".to_owned()];
    journals.extend(ROLES.iter().map(|r| format!("c-{r}")));
    for id in journals {
        let body = json!({"external_id": id, "member": "m1", "type": "purchase", "occurred_at": "2026-11-20T10:00:00Z", "amount": "50", "currency": "EUR", "partner": "p1"});
        let (status, _) = send(
            &router,
            Method::POST,
            "/api/v1/programs/shop/journals",
            Some(&admin),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // Holds of partner p1 for member m1: one read, one for each role to capture and one
    // to release.
    let mut orders = vec!["hs-seed".to_owned()];
    orders.extend(ROLES.iter().map(|r| format!("hc-{r}")));
    orders.extend(ROLES.iter().map(|r| format!("hr-{r}")));
    for order in orders {
        let (status, body) = send(
            &router,
            Method::POST,
            "/api/v1/programs/shop/holds",
            Some(&admin),
            Some(json!({"order_id": order, "member": "m1", "currency": "points", "points": 1, "partner": "p1"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = send(
        &router,
        Method::POST,
        "/api/v1/programs/shop/vouchers",
        Some(&admin),
        Some(json!({"definition": "gift", "member": "m1", "key": "seed"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let voucher = body["code"].as_str().unwrap().to_owned();
    // A catalog item fulfilled by partner p1, and orders of it: one read, one for each
    // role to cancel and one to fulfil.
    let (status, body) = send(
        &router,
        Method::PUT,
        "/api/v1/programs/shop/catalog/mug",
        Some(&admin),
        Some(json!({"name": "Mug", "currency": "points", "points": 1, "partner": "p1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut orders = vec!["os-seed".to_owned()];
    orders.extend(ROLES.iter().map(|r| format!("oc-{r}")));
    orders.extend(ROLES.iter().map(|r| format!("of-{r}")));
    for order in orders {
        let (status, body) = send(
            &router,
            Method::POST,
            "/api/v1/programs/shop/orders",
            Some(&admin),
            Some(json!({"order_id": order, "member": "m1", "item": "mug"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Partner p1 (earn and burn, postpaid: the seed journals above stay as they are) and a
    // prepaid partner to top up.
    for (code, body) in [
        (
            "p1",
            json!({"name": "Partner one", "roles": "both", "billing": "postpaid"}),
        ),
        (
            "pk",
            json!({"name": "Packs", "roles": "earn", "billing": "prepaid", "cost_per_point": "0.01"}),
        ),
    ] {
        let (status, body) = send(
            &router,
            Method::PUT,
            &format!("/api/v1/programs/shop/partners/{code}"),
            Some(&admin),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    World {
        router,
        tokens,
        partner_other,
        member_other,
        voucher,
        _db: db,
    }
}

async fn send(
    router: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let request = match body {
        Some(b) => request
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None if path.ends_with("/batch") => request
            .header("content-type", "application/x-ndjson")
            .body(Body::empty()),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_matrix_says() {
    let world = world().await;
    let cases = cases();
    // The matrix covers every operation of the OpenAPI document.
    let spec = serde_json::to_value(fidelis_web::openapi()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
        {
            assert!(
                cases
                    .iter()
                    .any(|c| c.template == path && c.method.as_str().eq_ignore_ascii_case(method)),
                "{method} {path} is not in the authorization matrix"
            );
        }
    }
    for case in &cases {
        for (role, token) in &world.tokens {
            let path = case
                .path
                .replace("{role}", role)
                .replace("{voucher}", &world.voucher);
            let body = case
                .body
                .as_ref()
                .map(|b| serde_json::from_str(&b.to_string().replace("{role}", role)).unwrap());
            let (status, problem) = send(
                &world.router,
                case.method.clone(),
                &path,
                token.as_deref(),
                body,
            )
            .await;
            let allowed = case.allowed.contains(role);
            match (*role, allowed) {
                ("none", true) => assert_eq!(
                    status,
                    StatusCode::OK,
                    "{} {path} without a token",
                    case.method
                ),
                ("none", false) => assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{} {path} without a token",
                    case.method
                ),
                (_, true) => assert!(
                    status != StatusCode::FORBIDDEN
                        && status != StatusCode::UNAUTHORIZED
                        && status.as_u16() < 500,
                    "{} {path} as {role}: {status} {problem}",
                    case.method
                ),
                (_, false) => {
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{} {path} as {role}: {problem}",
                        case.method
                    );
                    assert_eq!(problem["code"], "forbidden");
                }
            }
        }
    }
}

#[tokio::test]
async fn members_and_partners_cannot_read_each_other() {
    let world = world().await;
    let r = &world.router;
    // Member m2 reads member m1: refused, in every member-scoped read.
    for path in [
        "/api/v1/programs/shop/members/m1",
        "/api/v1/programs/shop/members/m1/balances",
        "/api/v1/programs/shop/members/m1/ledger",
        "/api/v1/programs/shop/members/m1/promotions",
        "/api/v1/programs/shop/members/m1/tiers",
    ] {
        let (status, _) = send(r, Method::GET, path, Some(&world.member_other), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "member m2 reading {path}");
    }
    // Another's journal answers exactly as a journal that does not exist (no probing).
    for token in [&world.member_other, &world.partner_other] {
        let (status, body) = send(
            r,
            Method::GET,
            "/api/v1/programs/shop/journals/p1-seed",
            Some(token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (unknown_status, unknown) = send(
            r,
            Method::GET,
            "/api/v1/programs/shop/journals/no-such-journal",
            Some(token),
            None,
        )
        .await;
        assert_eq!(unknown_status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], unknown["code"]);
        assert_eq!(body["title"], unknown["title"]);
    }
    // Partner p2 sees nothing of partner p1: not its record, not its ledger, not in the
    // list; p1 sees itself alone.
    for path in [
        "/api/v1/programs/shop/partners/p1",
        "/api/v1/programs/shop/partners/p1/entries",
        "/api/v1/programs/shop/partners/p1/settlement?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
    ] {
        let (status, _) = send(r, Method::GET, path, Some(&world.partner_other), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "partner p2 reading {path}");
    }
    let (status, body) = send(
        r,
        Method::GET,
        "/api/v1/programs/shop/partners",
        Some(&world.partner_other),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["partners"], json!([]));
    let p1 = world
        .tokens
        .iter()
        .find(|(r, _)| *r == "partner")
        .and_then(|(_, t)| t.clone())
        .unwrap();
    let (_, body) = send(
        r,
        Method::GET,
        "/api/v1/programs/shop/partners",
        Some(&p1),
        None,
    )
    .await;
    let codes: Vec<&str> = body["partners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["p1"]);
    let (status, _) = send(
        r,
        Method::POST,
        "/api/v1/programs/shop/members/m1/promotions/welcome/join",
        Some(&world.member_other),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "member m2 joining for m1");
    let (status, _) = send(
        r,
        Method::POST,
        "/api/v1/programs/shop/members/m1/redemptions",
        Some(&world.member_other),
        Some(json!({"external_id": "steal", "currency": "points", "points": 1})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "member m2 spending m1's points"
    );
    let (status, _) = send(
        r,
        Method::POST,
        "/api/v1/programs/shop/members/m1/transfers",
        Some(&world.member_other),
        Some(json!({"external_id": "steal-t", "to": "m2", "currency": "points", "points": 1})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "member m2 sending m1's points"
    );
    for (method, path, body) in [
        (Method::GET, "/api/v1/programs/shop/groups/home", None),
        (
            Method::POST,
            "/api/v1/programs/shop/groups/home/redemptions",
            Some(
                json!({"external_id": "steal-g", "member": "m1", "currency": "points", "points": 1}),
            ),
        ),
    ] {
        let (status, _) = send(r, method, path, Some(&world.member_other), body).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "member m2 and m1's household: {path}"
        );
    }
    // Another's hold: not placed, not seen, not ended.
    let (status, _) = send(
        r,
        Method::POST,
        "/api/v1/programs/shop/holds",
        Some(&world.member_other),
        Some(json!({"order_id": "steal-h", "member": "m1", "currency": "points", "points": 1})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "member m2 holding m1's points"
    );
    for token in [&world.member_other, &world.partner_other] {
        for (method, path) in [
            (Method::GET, "/api/v1/programs/shop/holds/hs-seed"),
            (Method::POST, "/api/v1/programs/shop/holds/hs-seed/capture"),
            (Method::POST, "/api/v1/programs/shop/holds/hs-seed/release"),
        ] {
            let (status, body) = send(r, method, path, Some(token), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
            assert_eq!(body["code"], "unknown_hold");
        }
    }
    // Another member's voucher: not seen, not used (as a code that does not exist); their
    // voucher list is not theirs to read.
    let v = &world.voucher;
    for (method, path, body) in [
        (
            Method::GET,
            format!("/api/v1/programs/shop/vouchers/{v}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/programs/shop/vouchers/{v}/redeem"),
            Some(json!({"key": "steal-v"})),
        ),
        (
            Method::POST,
            format!("/api/v1/programs/shop/vouchers/{v}/reserve"),
            Some(json!({"key": "steal-v"})),
        ),
    ] {
        let (status, body) = send(r, method, &path, Some(&world.member_other), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["code"], "unknown_voucher");
    }
    let (status, _) = send(
        r,
        Method::GET,
        "/api/v1/programs/shop/members/m1/vouchers",
        Some(&world.member_other),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Another member's or partner's orders are not confirmed to exist; a list is one's own.
    for token in [&world.member_other, &world.partner_other] {
        let (status, body) = send(
            r,
            Method::GET,
            "/api/v1/programs/shop/orders/os-seed",
            Some(token),
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_order"))
        );
        let (status, body) = send(
            r,
            Method::GET,
            "/api/v1/programs/shop/orders",
            Some(token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["orders"], json!([]), "{body}");
        let (status, _) = send(
            r,
            Method::POST,
            "/api/v1/programs/shop/orders/of-seed/fulfil",
            Some(token),
            None,
        )
        .await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{status}"
        );
    }
    let (status, _) = send(
        r,
        Method::POST,
        "/api/v1/programs/shop/orders",
        Some(&world.member_other),
        Some(json!({"order_id": "stolen", "member": "m1", "item": "mug"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Partner p2 posts in p1's name: refused.
    let (status, _) = send(r, Method::POST, "/api/v1/programs/shop/journals", Some(&world.partner_other),
        Some(json!({"external_id": "x", "member": "m1", "type": "purchase", "occurred_at": "2026-11-20T10:00:00Z", "amount": "1", "currency": "EUR", "partner": "p1"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Their own data they may read.
    let member_m1 = world
        .tokens
        .iter()
        .find(|(r, _)| *r == "member")
        .unwrap()
        .1
        .clone()
        .unwrap();
    let (status, body) = send(
        r,
        Method::GET,
        "/api/v1/programs/shop/members/m1/balances",
        Some(&member_m1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["balances"][0]["available"],
        350 - 13 - 13,
        "seven purchases of 50 by the seed, less the thirteen points held and thirteen orders"
    );
    let partner_p1 = world
        .tokens
        .iter()
        .find(|(r, _)| *r == "partner")
        .unwrap()
        .1
        .clone()
        .unwrap();
    let (status, _) = send(
        r,
        Method::GET,
        "/api/v1/programs/shop/journals/p1-seed",
        Some(&partner_p1),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// A scoped token: `journals:write` only.
async fn scoped_writer(world: &World) -> String {
    let admin = world.tokens[0].1.clone().unwrap();
    let (status, body) = send(
        &world.router,
        Method::POST,
        "/api/v1/tokens",
        Some(&admin),
        Some(json!({"name": "pos-writer", "role": "program_manager", "program": "shop", "scopes": ["journals:write"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Journal types × roles, realtime and batch: what a journal does decides the right it
/// needs, whichever route it comes through, and partners touch only their own journals.
#[tokio::test]
async fn journal_types_are_authorized_by_what_they_do() {
    let world = world().await;
    let r = &world.router;
    let admin = world.tokens[0].1.clone().unwrap();
    let mut callers: Vec<(String, Option<String>)> = world
        .tokens
        .iter()
        .map(|(role, token)| ((*role).to_owned(), token.clone()))
        .collect();
    callers.push(("partner_other".into(), Some(world.partner_other.clone())));
    callers.push(("scoped_writer".into(), Some(scoped_writer(&world).await)));
    // What each kind of journal allows: the other partner may not refund or cancel p1's
    // journals; the scoped writer posts accruals and refunds only.
    let allowed = |kind: &str, caller: &str| -> bool {
        match (kind, caller) {
            (_, "admin" | "program_manager") => true,
            ("purchase", "partner" | "partner_other" | "scoped_writer") => true,
            ("refund", "partner" | "scoped_writer") => true,
            // A partner takes redemptions at its own counter (as on the dedicated route).
            ("redemption", "partner" | "partner_other") => true,
            ("cancellation", "partner") => true,
            _ => false,
        }
    };
    for channel in ["realtime", "batch"] {
        for (caller, token) in &callers {
            let Some(token) = token else { continue };
            // A journal of partner p1 for this caller to cancel.
            let original = format!("orig-{caller}-{channel}");
            let (status, _) = send(r, Method::POST, "/api/v1/programs/shop/journals", Some(&admin),
                Some(json!({"external_id": original, "member": "m1", "type": "purchase", "occurred_at": "2026-11-20T10:00:00Z", "amount": "10", "currency": "EUR", "partner": "p1"}))).await;
            assert_eq!(status, StatusCode::CREATED);
            let id = |kind: &str| format!("{kind}-{caller}-{channel}");
            let documents = [
                (
                    "purchase",
                    json!({"external_id": id("purchase"), "member": "m1", "type": "purchase", "occurred_at": "2026-11-20T10:00:00Z", "amount": "10", "currency": "EUR"}),
                ),
                (
                    "refund",
                    json!({"external_id": id("refund"), "member": "m1", "type": "refund", "occurred_at": "2026-11-21T10:00:00Z", "original_external_id": "p1-seed", "amount": "1", "currency": "EUR"}),
                ),
                (
                    "redemption",
                    json!({"external_id": id("redemption"), "member": "m1", "type": "redemption", "occurred_at": "2026-11-21T10:00:00Z", "currency": "points", "points": 1}),
                ),
                (
                    "adjustment",
                    json!({"external_id": id("adjustment"), "member": "m1", "type": "adjustment", "occurred_at": "2026-11-21T10:00:00Z", "currency": "points", "points": 500000, "reason": "goodwill"}),
                ),
                (
                    "cancellation",
                    json!({"external_id": id("cancellation"), "member": "m1", "type": "cancellation", "occurred_at": "2026-11-21T10:00:00Z", "original_external_id": original}),
                ),
            ];
            for (kind, document) in documents {
                let may = allowed(kind, caller);
                let (status, code) = if channel == "realtime" {
                    let (status, body) = send(
                        r,
                        Method::POST,
                        "/api/v1/programs/shop/journals",
                        Some(token),
                        Some(document),
                    )
                    .await;
                    (status, body["code"].as_str().unwrap_or_default().to_owned())
                } else {
                    let request = Request::builder()
                        .method(Method::POST)
                        .uri("/api/v1/programs/shop/journals/batch")
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/x-ndjson")
                        .body(Body::from(format!("{document}\n")))
                        .unwrap();
                    let response = r.clone().oneshot(request).await.unwrap();
                    let status = response.status();
                    let bytes = response.into_body().collect().await.unwrap().to_bytes();
                    if status == StatusCode::OK {
                        let line: Value = serde_json::from_slice(bytes.trim_ascii()).unwrap();
                        (
                            status,
                            line["error"]["code"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        )
                    } else {
                        let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        (
                            status,
                            problem["code"].as_str().unwrap_or_default().to_owned(),
                        )
                    }
                };
                if may {
                    assert!(
                        status.is_success() && code.is_empty(),
                        "{channel} {kind} as {caller}: {status} {code}"
                    );
                } else {
                    assert_eq!(code, "forbidden", "{channel} {kind} as {caller}: {status}");
                }
            }
        }
    }
    // Adjustments and cancellations through the journal routes are audited like those of
    // the dedicated routes: adjustments by the admin and the program manager,
    // cancellations by them and partner p1, each realtime and in a batch.
    for (action, count) in [("journal.adjustment", 4), ("journal.cancel", 6)] {
        let (status, page) = send(
            r,
            Method::GET,
            &format!("/api/v1/audit?action={action}"),
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(entries.len(), count, "{action}: {page}");
    }
}

/// A token never creates a token or user with more rights than itself, and sees and
/// revokes only what it may see.
#[tokio::test]
async fn tokens_never_create_more_than_themselves() {
    let world = world().await;
    let r = &world.router;
    let admin = world.tokens[0].1.clone().unwrap();
    let create = |token: String, body: Value| async move {
        send(r, Method::POST, "/api/v1/tokens", Some(&token), Some(body)).await
    };
    // An admin token limited to program shop, and one narrowed by scopes.
    let (status, body) = create(
        admin.clone(),
        json!({"name": "shop-admin", "role": "admin", "program": "shop"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let shop_admin = body["token"].as_str().unwrap().to_owned();
    let (status, body) = create(admin.clone(), json!({"name": "narrow-admin", "role": "admin", "scopes": ["tokens:manage", "members:read"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let narrow_admin = body["token"].as_str().unwrap().to_owned();

    for (who, token, request) in [
        (
            "shop admin",
            &shop_admin,
            json!({"name": "x1", "role": "admin"}),
        ),
        (
            "shop admin",
            &shop_admin,
            json!({"name": "x2", "role": "admin", "program": "other"}),
        ),
        (
            "shop admin",
            &shop_admin,
            json!({"name": "x3", "role": "program_manager"}),
        ),
        (
            "narrow admin",
            &narrow_admin,
            json!({"name": "x4", "role": "admin"}),
        ),
        (
            "narrow admin",
            &narrow_admin,
            json!({"name": "x5", "role": "agent"}),
        ),
        (
            "narrow admin",
            &narrow_admin,
            json!({"name": "x6", "role": "admin", "scopes": ["members:write"]}),
        ),
    ] {
        let (status, body) = create(token.clone(), request.clone()).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{who} creating {request}: {body}"
        );
    }
    for (token, request) in [
        (
            &shop_admin,
            json!({"name": "ok1", "role": "agent", "program": "shop"}),
        ),
        (
            &narrow_admin,
            json!({"name": "ok2", "role": "admin", "scopes": ["members:read"]}),
        ),
    ] {
        let (status, body) = create(token.clone(), request.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{request}: {body}");
    }
    for (token, request) in [
        (
            &shop_admin,
            json!({"email": "boss@example.com", "password": "a long enough password", "role": "admin"}),
        ),
        (
            &narrow_admin,
            json!({"email": "agent@example.com", "password": "a long enough password", "role": "agent"}),
        ),
    ] {
        let (status, body) = send(
            r,
            Method::POST,
            "/api/v1/users",
            Some(token),
            Some(request.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{request}: {body}");
    }
    let (status, body) = send(r, Method::POST, "/api/v1/users", Some(&shop_admin),
        Some(json!({"email": "shop-agent@example.com", "password": "a long enough password", "role": "agent", "program": "shop"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The program-limited admin sees only its program's tokens, and cannot revoke others.
    let (status, listed) = send(r, Method::GET, "/api/v1/tokens", Some(&shop_admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = listed.as_array().unwrap();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|t| t["program"] == "shop"), "{listed:?}");
    let (_, all) = send(r, Method::GET, "/api/v1/tokens", Some(&admin), None).await;
    let unlimited = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["program"].is_null())
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let (status, _) = send(
        r,
        Method::DELETE,
        &format!("/api/v1/tokens/{unlimited}"),
        Some(&shop_admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(r, Method::GET, "/api/v1/programs/shop", Some(&admin), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the unlimited admin token still works"
    );

    // The bootstrap token's name is reserved.
    let (status, body) = create(
        admin.clone(),
        json!({"name": "bootstrap-admin", "role": "agent"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// Unauthenticated requests with invented method names do not grow `/metrics`.
#[tokio::test]
async fn metrics_do_not_grow_with_invented_methods() {
    let world = world().await;
    let lines = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let metrics = || async {
        let response = world
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/metrics")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let send_invented = |i: usize| {
        let request = Request::builder()
            .method(Method::from_bytes(format!("M{i}X").as_bytes()).unwrap())
            .uri(format!("/api/v1/programs/shop/members/x{i}"))
            .body(Body::empty())
            .unwrap();
        world.router.clone().oneshot(request)
    };
    for i in 0..5 {
        send_invented(i).await.unwrap();
    }
    // Reading /metrics adds its own series once; read it twice before counting.
    metrics().await;
    let before = lines(&metrics().await);
    for i in 5..205 {
        send_invented(i).await.unwrap();
    }
    let after = metrics().await;
    assert!(
        lines(&after) <= before + 2,
        "200 invented methods grew /metrics from {before} to {} lines",
        lines(&after)
    );
    assert!(!after.contains("M17X"));
}
