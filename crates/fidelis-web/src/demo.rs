//! The living demo: on an empty database, a `demo` program from the retail template with a
//! few hundred members and thirty months of generated history — purchases, refunds,
//! redemptions, expiries — processed month by month as if it had happened then.

use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Actor, Enrollment, Prepared, Store, StoreError};

/// The demo program's code.
pub const PROGRAM: &str = "demo";
const MEMBERS: u64 = 300;
const MONTHS: u32 = 30;

/// What seeding did.
#[derive(Debug, Clone, Copy)]
pub struct DemoReport {
    pub members: u64,
    pub journals: u64,
}

/// A small deterministic generator: the same demo on every run (and the same generated
/// members in `fidelis bench`).
#[doc(hidden)]
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis",
    "Radia", "Niklaus",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
    "Ritchie", "Perlman", "Wirth",
];
const CATEGORIES: &[(&str, &str)] = &[
    ("shoes", "SH"),
    ("socks", "SO"),
    ("jackets", "JA"),
    ("bags", "BA"),
    ("shirts", "SI"),
];

/// Seeds the demo if the database has no program yet. Returns `None` when it had one.
pub async fn seed(store: &Store, now: DateTime<Utc>) -> Result<Option<DemoReport>, StoreError> {
    if !store.programs().await?.is_empty() {
        return Ok(None);
    }
    let template = fidelis_core::templates::find("retail")
        .ok_or_else(|| StoreError::Inconsistent("no retail template".into()))?;
    let document: ProgramDocument = yaml_serde::from_str(template.source)
        .map_err(|e| StoreError::Inconsistent(format!("retail template: {e}")))?;
    let program = Program::compile(&document, Some(PROGRAM))
        .map_err(|p| StoreError::Inconsistent(format!("retail template: {}", p[0])))?;
    let actor = Actor {
        name: "demo".into(),
        role: "admin".into(),
    };
    let start = month_start(now) - Months::new(MONTHS);
    store.put_program(&program, start, &actor).await?;
    let loaded = store.require_program(PROGRAM).await?;

    let mut rng = Lcg(20_261_125);
    let enrollments: Vec<Enrollment> = (0..MEMBERS)
        .map(|m| {
            let first = FIRST_NAMES[rng.next(FIRST_NAMES.len() as u64) as usize];
            let last = LAST_NAMES[rng.next(LAST_NAMES.len() as u64) as usize];
            Enrollment {
                external_id: ExternalId::parse(&format!("C-{:06}", 100_000 + m)).unwrap_or_else(|_| unreachable!()),
                profile: serde_json::json!({
                    "name": format!("{first} {last}"),
                    "email": format!("{}.{}{m}@example.com", first.to_lowercase(), last.to_lowercase()),
                    "birthday": format!("{}-{:02}-{:02}", 1950 + rng.next(55), 1 + rng.next(12), 1 + rng.next(28)),
                }),
                // Enrolled before the first purchase the demo gives them.
                enrolled_at: start - Duration::days(rng.next(60) as i64),
            }
        })
        .collect();
    store.enroll_many(&loaded, &enrollments, start).await?;

    let mut journals = 0u64;
    let mut purchases: Vec<(String, String)> = Vec::new();
    for month in 0..MONTHS {
        let from = start + Months::new(month);
        let until = (from + Months::new(1)).min(now);
        let span = (until - from).num_seconds().max(1) as u64;
        let mut documents: Vec<(DateTime<Utc>, serde_json::Value)> = Vec::new();
        for m in 0..MEMBERS {
            let member = format!("C-{:06}", 100_000 + m);
            // Some members shop every month, most now and then.
            let visits = match m % 10 {
                0 | 1 => 3,
                2..=5 => rng.next(3),
                _ => u64::from(rng.next(4) == 0),
            };
            for v in 0..visits {
                let at = from + Duration::seconds(rng.next(span) as i64);
                let id = format!("pos-{}-{m}-{v}", from.format("%Y%m"));
                let (category, sku) = CATEGORIES[rng.next(CATEGORIES.len() as u64) as usize];
                let cents = 1_500 + rng.next(18_000);
                documents.push((at, serde_json::json!({
                    "external_id": id, "member": member, "type": "purchase", "occurred_at": at.to_rfc3339(),
                    "amount": format!("{}.{:02}", cents / 100, cents % 100), "currency": "EUR", "channel": "store",
                    "store": format!("berlin-{:02}", rng.next(8)),
                    "lines": [{"line_id": "1", "sku": format!("{sku}-{}", rng.next(90)), "category": category, "quantity": 1,
                               "amount": format!("{}.{:02}", cents / 100, cents % 100)}]
                })));
                purchases.push((id, member.clone()));
            }
            if rng.next(8) == 0 {
                let at = from + Duration::seconds(rng.next(span) as i64);
                documents.push((at, serde_json::json!({
                    "external_id": format!("rd-{}-{m}", from.format("%Y%m")), "member": member, "type": "redemption",
                    "occurred_at": at.to_rfc3339(), "currency": "points", "points": 100 * (1 + rng.next(4))
                })));
            }
        }
        // A few returns of recent purchases.
        for _ in 0..(MEMBERS / 40) {
            if purchases.is_empty() {
                break;
            }
            let (original, member) = purchases
                [purchases.len() - 1 - rng.next(purchases.len().min(400) as u64) as usize]
                .clone();
            let at = until - Duration::hours(1 + rng.next(48) as i64);
            documents.push((
                at,
                serde_json::json!({
                    "external_id": format!("rf-{original}"), "member": member, "type": "refund",
                    "occurred_at": at.to_rfc3339(), "original_external_id": original
                }),
            ));
        }
        documents.sort_by_key(|(at, _)| *at);
        let prepared: Vec<Prepared> = documents
            .into_iter()
            .filter_map(|(_, json)| {
                let doc: JournalDocument = serde_json::from_value(json).ok()?;
                let journal = Journal::parse(&doc, &loaded.program).ok()?;
                Prepared::new(journal, &loaded.program).ok()
            })
            .collect();
        for chunk in prepared.chunks(2_000) {
            let results = store.post_journals(&loaded, chunk, until, None).await?;
            journals += results.iter().filter(|r| r.is_ok()).count() as u64;
        }
        store.run_jobs(&loaded, until).await?;
    }
    Ok(Some(DemoReport {
        members: MEMBERS,
        journals,
    }))
}

fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(t)
}

/// The demo's staff user (an administrator).
pub const DEMO_ADMIN: &str = "admin@demo.fidelis";
/// The demo member who gets a portal link.
pub const DEMO_MEMBER: &str = "C-100000";

/// How a newcomer signs in to the demo's pages.
#[derive(Debug, Clone)]
pub struct DemoAccess {
    pub email: &'static str,
    /// New at every start: printed, never stored in clear.
    pub password: String,
    /// A one-time portal link for [`DEMO_MEMBER`] (a path).
    pub member_link: String,
}

/// Gives the demo's administrator a fresh password (creating the user the first time) and
/// the demo member a new one-time portal link. Only `serve --demo` calls this, so the
/// printed password works until the next start.
pub async fn access(store: &Store, now: DateTime<Utc>) -> Result<Option<DemoAccess>, StoreError> {
    let Some(program) = store.program(PROGRAM).await? else {
        return Ok(None);
    };
    let password = crate::auth::new_token()[4..24].to_owned();
    let hash = crate::auth::hash_password(&password)
        .map_err(|_| StoreError::Inconsistent("cannot hash the demo password".into()))?;
    if !store.set_user_password(DEMO_ADMIN, &hash).await? {
        store
            .create_user(
                &fidelis_store::UserRecord {
                    id: 0,
                    email: DEMO_ADMIN.into(),
                    password_hash: hash,
                    role: "admin".into(),
                    program: None,
                    partner: None,
                    member: None,
                },
                now,
            )
            .await?;
    }
    let Some(member) = store.member(&program, DEMO_MEMBER).await? else {
        return Ok(None);
    };
    let token = crate::auth::new_token();
    store
        .create_signin_link(
            member.id,
            &crate::auth::token_hash(&token),
            now,
            now + crate::routes::members::PORTAL_LINK_TTL,
        )
        .await?;
    Ok(Some(DemoAccess {
        email: DEMO_ADMIN,
        password,
        member_link: format!("/portal/{PROGRAM}/link/{token}"),
    }))
}
