//! The living demo: on an empty database, a `demo` program from one of the industry
//! templates (retail by default) with a few hundred members and thirty months of generated
//! history in that industry's shape — purchases at a store, flights by cabin and partner
//! purchases, hotel stays by the night, coffee-shop visits — with refunds, redemptions and
//! expiries, processed month by month as if it had happened then.

use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Actor, Enrollment, Prepared, Store, StoreError};

/// The demo program's code.
pub const PROGRAM: &str = "demo";
/// The demo's members and months of history.
pub const MEMBERS: u64 = 300;
pub const MONTHS: u32 = 30;

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

/// Seeds the retail demo if the database has no program yet. Returns `None` when it had
/// one.
pub async fn seed(store: &Store, now: DateTime<Utc>) -> Result<Option<DemoReport>, StoreError> {
    seed_template(store, now, "retail", MEMBERS, MONTHS).await
}

/// Seeds the demo from the template `name` (`retail`, `airline`, `hotel`, `coffee`) with
/// `members` members and `months` months of history, if the database has no program yet.
/// Returns `None` when it had one; a template that does not exist is refused.
pub async fn seed_template(
    store: &Store,
    now: DateTime<Utc>,
    name: &str,
    members: u64,
    months: u32,
) -> Result<Option<DemoReport>, StoreError> {
    let template = fidelis_core::templates::find(name).ok_or_else(|| {
        StoreError::Refused(
            "unknown_template",
            format!(
                "there is no template {name:?}; there are {}",
                fidelis_core::templates::TEMPLATES
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    if !store.programs().await?.is_empty() {
        return Ok(None);
    }
    let document: ProgramDocument = yaml_serde::from_str(template.source)
        .map_err(|e| StoreError::Inconsistent(format!("{name} template: {e}")))?;
    let program = Program::compile(&document, Some(PROGRAM))
        .map_err(|p| StoreError::Inconsistent(format!("{name} template: {}", p[0])))?;
    let industry = Industry::of(name);
    let money = program.money_currency.code().to_owned();
    // What members redeem: the first redeemable currency, in the industry's usual steps.
    let spendable = program
        .currencies
        .iter()
        .find(|c| c.kind == fidelis_core::program::CurrencyKind::Redeemable)
        .map(|c| c.code.to_string())
        .unwrap_or_else(|| "points".into());
    let actor = Actor {
        name: "demo".into(),
        role: "admin".into(),
    };
    let start = month_start(now) - Months::new(months);
    store.put_program(&program, start, &actor).await?;
    let loaded = store.require_program(PROGRAM).await?;

    let mut rng = Lcg(20_261_125);
    let enrollments: Vec<Enrollment> = (0..members)
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
    for month in 0..months {
        let from = start + Months::new(month);
        let until = (from + Months::new(1)).min(now);
        let span = (until - from).num_seconds().max(1) as u64;
        let mut documents: Vec<(DateTime<Utc>, serde_json::Value)> = Vec::new();
        for m in 0..members {
            let member = format!("C-{:06}", 100_000 + m);
            // Some members come every month, most now and then.
            let visits = industry.visits(m, &mut rng);
            for v in 0..visits {
                let at = from + Duration::seconds(rng.next(span) as i64);
                let id = format!("pos-{}-{m}-{v}", from.format("%Y%m"));
                let mut doc = industry.visit(&mut rng);
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert("external_id".into(), id.clone().into());
                    obj.insert("member".into(), member.clone().into());
                    obj.insert("occurred_at".into(), at.to_rfc3339().into());
                    obj.insert("currency".into(), money.clone().into());
                }
                documents.push((at, doc));
                purchases.push((id, member.clone()));
            }
            if rng.next(8) == 0 {
                let at = from + Duration::seconds(rng.next(span) as i64);
                documents.push((at, serde_json::json!({
                    "external_id": format!("rd-{}-{m}", from.format("%Y%m")), "member": member, "type": "redemption",
                    "occurred_at": at.to_rfc3339(), "currency": spendable,
                    "points": industry.redemption_step() * (1 + rng.next(4))
                })));
            }
        }
        // A few returns of recent purchases.
        for _ in 0..(members / 40) {
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
    Ok(Some(DemoReport { members, journals }))
}

/// The shape of the demo's history per template.
#[derive(Debug, Clone, Copy)]
enum Industry {
    Retail,
    Airline,
    Hotel,
    Coffee,
}

const ROUTES: &[&str] = &[
    "CDG-JFK", "JFK-CDG", "CDG-NRT", "NRT-CDG", "CDG-LHR", "LHR-CDG", "CDG-FCO", "FCO-CDG",
    "CDG-YUL", "YUL-CDG",
];

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

impl Industry {
    fn of(template: &str) -> Self {
        match template {
            "airline" => Self::Airline,
            "hotel" => Self::Hotel,
            "coffee" => Self::Coffee,
            _ => Self::Retail,
        }
    }

    /// Member `m`'s visits this month: a fifth come often, the rest now and then.
    fn visits(self, m: u64, rng: &mut Lcg) -> u64 {
        match (self, m % 10) {
            (Self::Coffee, 0 | 1) => 8 + rng.next(8),
            (Self::Coffee, 2..=5) => rng.next(5),
            (Self::Airline | Self::Hotel, 0 | 1) => 1 + rng.next(2),
            (Self::Airline | Self::Hotel, 2..=5) => u64::from(rng.next(3) == 0),
            (_, 0 | 1) => 3,
            (_, 2..=5) => rng.next(3),
            _ => u64::from(rng.next(4) == 0),
        }
    }

    /// The points of one redemption step in the template's currency.
    fn redemption_step(self) -> u64 {
        match self {
            Self::Retail => 100,
            Self::Airline => 2_500,
            Self::Hotel => 5_000,
            Self::Coffee => 50,
        }
    }

    /// One visit's journal, without its id, member, instant and currency.
    fn visit(self, rng: &mut Lcg) -> serde_json::Value {
        match self {
            Self::Retail => {
                let (category, sku) = CATEGORIES[rng.next(CATEGORIES.len() as u64) as usize];
                let cents = 1_500 + rng.next(18_000);
                serde_json::json!({
                    "type": "purchase", "amount": money(cents), "channel": "store",
                    "store": format!("berlin-{:02}", rng.next(8)),
                    "lines": [{"line_id": "1", "sku": format!("{sku}-{}", rng.next(90)), "category": category,
                               "quantity": 1, "amount": money(cents)}]
                })
            }
            Self::Airline if rng.next(5) == 0 => {
                // A purchase at a partner.
                let partners = ["car-rental", "hotels", "shop"];
                let partner = partners[rng.next(3) as usize];
                serde_json::json!({"type": "purchase", "amount": money(3_000 + rng.next(27_000)), "partner": partner})
            }
            Self::Airline => {
                let segments = 1 + rng.next(2);
                let mut lines = Vec::new();
                let mut total = 0;
                for l in 0..segments {
                    let (cabin, cents) = match rng.next(100) {
                        0..=69 => ("economy", 8_000 + rng.next(32_000)),
                        70..=84 => ("premium", 30_000 + rng.next(60_000)),
                        85..=96 => ("business", 90_000 + rng.next(210_000)),
                        _ => ("first", 300_000 + rng.next(500_000)),
                    };
                    total += cents;
                    lines.push(serde_json::json!({"line_id": (l + 1).to_string(),
                        "sku": ROUTES[rng.next(ROUTES.len() as u64) as usize], "category": cabin,
                        "quantity": 1, "amount": money(cents)}));
                }
                serde_json::json!({"type": "flight", "amount": money(total), "channel": "web", "lines": lines})
            }
            Self::Hotel => {
                let nights = 1 + rng.next(5);
                let suite = rng.next(10) == 0;
                let rate = if suite { 35_000 } else { 9_000 } + rng.next(15_000);
                let room = if suite { "suite" } else { "double" };
                let mut lines = vec![serde_json::json!({"line_id": "1", "sku": room,
                    "category": "room", "quantity": nights, "amount": money(rate * nights)})];
                let mut total = rate * nights;
                if rng.next(2) == 0 {
                    let dining = 2_500 + rng.next(12_000);
                    total += dining;
                    lines.push(serde_json::json!({"line_id": "2", "sku": "restaurant", "category": "dining",
                        "quantity": 1, "amount": money(dining)}));
                }
                serde_json::json!({"type": "stay", "amount": money(total),
                    "store": format!("hotel-{:02}", rng.next(12)), "lines": lines})
            }
            Self::Coffee => {
                let drinks = 1 + rng.next(2);
                let drink = 350 + rng.next(300);
                let sku = ["LATTE", "FLATWHITE", "ESPRESSO", "CHAI"][rng.next(4) as usize];
                let mut lines = vec![serde_json::json!({"line_id": "1", "sku": sku,
                    "category": "drink", "quantity": drinks, "amount": money(drink * drinks)})];
                let mut total = drink * drinks;
                if rng.next(3) == 0 {
                    let food = 250 + rng.next(400);
                    total += food;
                    lines.push(
                        serde_json::json!({"line_id": "2", "sku": "MUFFIN", "category": "food",
                        "quantity": 1, "amount": money(food)}),
                    );
                }
                serde_json::json!({"type": "purchase", "amount": money(total), "channel": "store",
                    "store": format!("nyc-{:02}", rng.next(6)), "lines": lines})
            }
        }
    }
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
