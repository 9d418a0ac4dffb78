//! A member's personal data, end to end on a real `fidelis serve` (SQLite and PostgreSQL):
//! the export holds every table's rows about the member, and after erasure no personal
//! datum of the member is left in any text column of any table (searched by the test with
//! its own SQL), while every balance, liability and partner figure is as it was.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use common::Server;

#[macro_use]
mod common;

both_dialects!(export_holds_everything_and_erasure_leaves_no_trace);

const MEMBER: &str = "CUST-ZX81-7731";
/// Another member, whose id begins with ours.
const NEIGHBOUR: &str = "CUST-ZX81-77310";
const OLD_ACCOUNT: &str = "CUST-ZX81-0042";
const NAME: &str = "Zenobia Quartermaine";
const EMAIL: &str = "Zenobia.Q@Example.org";
const PHONE: &str = "+44 20 7946 0958";
const CITY: &str = "Llanfairpwllgwyngyll";

/// The personal strings the test looks for after erasure (case-insensitively).
const PERSONAL: &[&str] = &[
    MEMBER,
    OLD_ACCOUNT,
    "Zenobia",
    "Quartermaine",
    "zenobia.q@example.org",
    PHONE,
    CITY,
    "1984-02-29",
];

/// A connection to the server's database, for the test's own SQL.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Db {
    async fn open(url: &str) -> Self {
        use sqlx::Connection;
        if url.starts_with("sqlite:") {
            Self::Sqlite(sqlx::SqliteConnection::connect(url).await.unwrap())
        } else {
            Self::Pg(sqlx::PgConnection::connect(url).await.unwrap())
        }
    }

    async fn strings(&mut self, sql: &str) -> Vec<(String, String)> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Sqlite(c) => sqlx::query_as(sql).fetch_all(c).await.unwrap(),
            Self::Pg(c) => sqlx::query_as(sql).fetch_all(c).await.unwrap(),
        }
    }

    async fn count(&mut self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await.unwrap(),
            Self::Pg(c) => sqlx::query_scalar(sql).fetch_one(c).await.unwrap(),
        }
    }

    /// Every (table, column) of text (JSON on PostgreSQL too), from the catalog.
    async fn text_columns(&mut self) -> Vec<(String, String)> {
        match self {
            Self::Sqlite(_) => {
                self.strings(
                    "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
                       AND m.name <> '_sqlx_migrations' AND upper(p.type) = 'TEXT'",
                )
                .await
            }
            Self::Pg(_) => {
                self.strings(
                    "SELECT table_name::text, column_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
                       AND data_type IN ('text', 'jsonb', 'json', 'character varying')",
                )
                .await
            }
        }
    }

    /// Every (table, column) naming a member: `member_id`, `member` or `owner_id`.
    async fn member_columns(&mut self) -> Vec<(String, String)> {
        let sql = match self {
            Self::Sqlite(_) => {
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND p.name IN ('member_id', 'member', 'owner_id')"
            }
            Self::Pg(_) => {
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND column_name IN ('member_id', 'member', 'owner_id')"
            }
        };
        self.strings(sql).await
    }

    /// Where `needle` occurs (case-insensitively): "table.column" for each hit.
    /// Rows that also hold the neighbour's id (which begins with the member's) are left
    /// out: the neighbour's data must stay.
    async fn find(&mut self, needle: &str) -> Vec<String> {
        let needle = needle.to_lowercase().replace('\'', "''");
        let other = NEIGHBOUR.to_lowercase();
        let pg = matches!(self, Self::Pg(_));
        let mut hits = Vec::new();
        for (table, column) in self.text_columns().await {
            let sql = if pg {
                format!(
                    "SELECT count(*) FROM \"{table}\" WHERE strpos(lower(\"{column}\"::text), '{needle}') > 0 \
                     AND strpos(lower(\"{column}\"::text), '{other}') = 0"
                )
            } else {
                format!(
                    "SELECT count(*) FROM \"{table}\" WHERE instr(lower(\"{column}\"), '{needle}') > 0 \
                     AND instr(lower(\"{column}\"), '{other}') = 0"
                )
            };
            if self.count(&sql).await > 0 {
                hits.push(format!("{table}.{column}"));
            }
        }
        hits
    }
}

/// Balances of a member, liability and the partner's figures: what erasure must not move.
async fn figures(s: &Server, members: &[&str]) -> Value {
    let mut balances = Vec::new();
    for m in members {
        balances
            .push(s.get(&format!("/programs/shop/members/{m}/balances")).await["balances"].clone());
    }
    let mut liability = s.get("/programs/shop/liability").await;
    liability.as_object_mut().unwrap().remove("as_of");
    let mut partner = s.get("/programs/shop/partners/cars").await;
    partner.as_object_mut().unwrap().remove("updated_at");
    json!({"balances": balances, "liability": liability, "partner": partner})
}

async fn export_holds_everything_and_erasure_leaves_no_trace(url: &str) {
    let s = Server::start(url).await;
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/shop",
            Some(
                json!({"name": "Shop", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable",
                                "expiry": {"policy": "rolling", "days": 365},
                                "transfer": {"daily_limit": 1000}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}]},
                "fraud": {"rules": [{"rule": "shared_receipt"}]}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post(
            "/programs/shop/members",
            json!({"member": "bob", "profile": {"name": "Bob"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post(
            "/programs/shop/members",
            json!({"member": NEIGHBOUR, "profile": {"name": "Ned", "language": "en"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let profile = json!({"name": NAME, "email": EMAIL, "phone": PHONE, "city": CITY,
                         "birthday": "1984-02-29", "language": "en"});
    for m in [MEMBER, OLD_ACCOUNT] {
        let (status, body) = s
            .post(
                "/programs/shop/members",
                json!({"member": m, "profile": profile}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/programs/shop/partners/cars",
            Some(
                json!({"name": "Car rental", "roles": "earn", "billing": "postpaid",
                        "cost_per_point": "0.008"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A life in the program: purchases (one at the partner), a redemption, transfers both
    // ways, an old account merged in, a claim with a note, a portal link and a token.
    let now = chrono::Utc::now().to_rfc3339();
    let journals = [
        json!({"external_id": "t-1", "member": MEMBER, "type": "purchase", "occurred_at": now,
               "amount": "120", "currency": "EUR", "attributes": {"note": format!("for {NAME}"), "receipt": "R-88"}}),
        json!({"external_id": "t-2", "member": MEMBER, "type": "purchase", "occurred_at": now,
               "amount": "80", "currency": "EUR", "partner": "cars"}),
        json!({"external_id": "t-3", "member": OLD_ACCOUNT, "type": "purchase", "occurred_at": now,
               "amount": "30", "currency": "EUR"}),
        json!({"external_id": "t-4", "member": "bob", "type": "purchase", "occurred_at": now,
               "amount": "50", "currency": "EUR", "attributes": {"receipt": "R-77"}}),
    ];
    for j in journals {
        let (status, body) = s.post("/programs/shop/journals", j).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Receipts sent twice are held for review: the member's own, and bob's naming the
    // member in its reason.
    for (id, member, receipt) in [("t-5", MEMBER, "R-77"), ("t-6", "bob", "R-88")] {
        let (status, body) = s
            .post(
                "/programs/shop/journals",
                json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": now,
                       "amount": "9", "currency": "EUR", "attributes": {"receipt": receipt}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["hold"]["rule"], "shared_receipt", "{body}");
    }
    let (status, body) = s
        .post(
            &format!("/programs/shop/members/{MEMBER}/redemptions"),
            json!({"external_id": "r-1", "currency": "points", "points": 25}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (from, to, id) in [(MEMBER, "bob", "x-1"), ("bob", MEMBER, "x-2")] {
        let (status, body) = s
            .post(
                &format!("/programs/shop/members/{from}/transfers"),
                json!({"external_id": id, "to": to, "currency": "points", "points": 5}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = s
        .post(
            &format!("/programs/shop/members/{OLD_ACCOUNT}/merge"),
            json!({"into": MEMBER}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    // The member files the claim itself: its id becomes the claim's `filed_by`.
    let token = s
        .token(json!({"name": format!("app of {NAME}"), "role": "member", "program": "shop", "member": MEMBER}))
        .await;
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let (status, body) = s
        .call_as(
            &token,
            Method::POST,
            "/programs/shop/claims",
            Some(json!({"member": MEMBER, "reference": "RCPT-1", "occurred_at": yesterday,
                   "amount": "12.00", "note": format!("{NAME} says the card was at home; call {PHONE}")})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .post(
            &format!("/programs/shop/members/{MEMBER}/portal-link"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut db = Db::open(url).await;
    for needle in PERSONAL {
        assert!(
            !db.find(needle).await.is_empty(),
            "the fixture stores {needle:?} somewhere"
        );
    }

    // The export, as the member: every table naming a member is there, with as many rows
    // about the member (and the account merged into it) as the database holds.
    let (status, export) = s
        .call_as(
            &token,
            Method::GET,
            &format!("/programs/shop/members/{MEMBER}/export"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["format"], "fidelis.member-export/1");
    let tables = export["tables"].as_object().unwrap();
    let ids =
        format!("(SELECT id FROM members WHERE external_id IN ('{MEMBER}', '{OLD_ACCOUNT}'))");
    let mut checked = 0;
    for (table, column) in db.member_columns().await {
        let rows = tables
            .get(&table)
            .unwrap_or_else(|| panic!("the export has no {table:?} ({column} names a member)"))
            .as_array()
            .unwrap();
        let filter = match column.as_str() {
            "member" => format!("member IN ('{MEMBER}', '{OLD_ACCOUNT}')"),
            c => format!("{c} IN {ids}"),
        };
        let held = db
            .count(&format!("SELECT count(*) FROM {table} WHERE {filter}"))
            .await;
        assert!(
            rows.len() as i64 >= held,
            "{table}: {} exported, {held} in the database",
            rows.len()
        );
        checked += 1;
    }
    assert!(checked >= 20, "{checked} tables checked");
    let member_row = &tables["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["external_id"] == MEMBER)
        .unwrap();
    assert_eq!(member_row["profile"]["email"], EMAIL);
    assert!(
        tables["journals"].as_array().unwrap().len() >= 6,
        "{}",
        tables["journals"]
    );
    let claim_note = tables["claims"][0]["note"].as_str().unwrap();
    assert!(claim_note.contains(PHONE), "{claim_note}");
    let dump = export.to_string();
    for secret in ["password_hash", "token_hash", "csrf"] {
        assert!(!dump.contains(secret), "the export leaks {secret}");
    }
    // Someone else's data: not for this member.
    let (status, _) = s
        .call_as(
            &token,
            Method::GET,
            "/programs/shop/members/bob/export",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let before = figures(&s, &[MEMBER, "bob"]).await;

    // Erasure, by the program's manager.
    let (status, erased) = s
        .post(&format!("/programs/shop/members/{MEMBER}/erase"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    let pseudonym = erased["member"].as_str().unwrap().to_owned();
    assert!(pseudonym.starts_with("erased-"), "{erased}");
    assert_eq!(
        erased["members"], 2,
        "the merged account is the same person"
    );

    for needle in PERSONAL {
        let hits = db.find(needle).await;
        assert!(hits.is_empty(), "{needle:?} is still in {hits:?}");
    }
    let after = figures(&s, &[&pseudonym, "bob"]).await;
    assert_eq!(before, after, "erasure moved a figure");
    // The neighbour keeps its id, profile and events: only the member's whole id went.
    let neighbour = s.get(&format!("/programs/shop/members/{NEIGHBOUR}")).await;
    assert_eq!(neighbour["profile"]["language"], "en", "{neighbour}");
    let events = s.get("/programs/shop/events?limit=100").await;
    let theirs = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "member.enrolled" && e["subject"] == NEIGHBOUR)
        .cloned()
        .unwrap_or_default();
    assert_eq!(theirs["payload"]["profile"]["name"], "Ned", "{events}");

    // The member is closed under its pseudonym; the old id is unknown (and free again);
    // the member's token no longer works; a second erasure finds nobody.
    let member = s.get(&format!("/programs/shop/members/{pseudonym}")).await;
    assert_eq!(member["status"], "closed", "{member}");
    assert_eq!(member["profile"], json!({}), "{member}");
    let (status, _, body) = s
        .call(
            Method::PUT,
            &format!("/programs/shop/members/{pseudonym}/status"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "member_erased");
    let (status, _) = s
        .call_as(
            &token,
            Method::GET,
            &format!("/programs/shop/members/{MEMBER}/balances"),
            None,
        )
        .await;
    // Revoked at once in the database; a node that checked the token in the last seconds
    // may still know it (the documented bound) — and then finds no such member.
    assert!(
        matches!(status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND),
        "{status}"
    );
    let (status, body) = s
        .post(&format!("/programs/shop/members/{MEMBER}/erase"), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_member"))
    );
    // The erasure is audited without personal data (the search above covered the audit
    // log too), naming the pseudonym.
    let audit = s.get("/audit?action=member.erase").await;
    assert_eq!(
        audit["entries"][0]["subject"],
        pseudonym.as_str(),
        "{audit}"
    );
    // The person may come back: a new member under the old id.
    let (status, body) = s
        .post(
            "/programs/shop/members",
            json!({"member": MEMBER, "profile": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(s.available(MEMBER).await, 0);
}
