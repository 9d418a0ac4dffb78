//! `fidelis bench …` (hidden): the pieces of the end-to-end import benchmark that need
//! the product's code. `cargo xtask bench-import` drives them.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::connect;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The churn models' fits on the CDNOW sample, timed `runs` times; the summaries are
    /// written for the comparison with `lifetimes`.
    ChurnCdnow {
        #[arg(long)]
        sample: PathBuf,
        #[arg(long)]
        summaries_out: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// A population drawn from the churn models: fitted and scored in process, and with
    /// --members-out/--journals-out written for the import path.
    ChurnPopulation {
        #[arg(long, default_value_t = 1_000_000)]
        members: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, requires = "journals_out")]
        members_out: Option<PathBuf>,
        #[arg(long, requires = "members_out")]
        journals_out: Option<PathBuf>,
    },
    /// Write a members file and a journals file of generated purchases.
    Generate {
        #[arg(long)]
        members: u64,
        #[arg(long)]
        journals: u64,
        #[arg(long)]
        members_out: PathBuf,
        #[arg(long)]
        journals_out: PathBuf,
    },
    /// The physical limit: per journal only insert the journal row, insert one ledger row
    /// and update the member's balance row, set-based, `batch` journals per transaction.
    BareBatch {
        #[arg(long)]
        members: u64,
        #[arg(long)]
        journals: u64,
        #[arg(long, default_value_t = 1000)]
        batch: u64,
    },
    /// Member search on a large program: enrols `members` generated people (names, emails,
    /// phones) into program `search` unless there already, then times searches and lists
    /// against a lookup by external id (the baseline), each `queries` times.
    MembersSearch {
        #[arg(long, default_value_t = 1_000_000)]
        members: u64,
        #[arg(long, default_value_t = 200)]
        queries: u64,
    },
    /// The console's pages on a large program: program `search` with `members` people and
    /// `journals` purchases over the last year (the retail template as shipped, promotions
    /// on), posted unless there already; then the member search, the 360° view and the
    /// dashboard timed through the router, against a member lookup in the store.
    Pages {
        #[arg(long, default_value_t = 1_000_000)]
        members: u64,
        #[arg(long, default_value_t = 10_000_000)]
        journals: u64,
        #[arg(long, default_value_t = 200)]
        queries: u64,
    },
    /// Program `money` for the settlement and liability benchmark: the retail template as
    /// shipped with four partners (two prepaid, one postpaid, one burn), `members` members
    /// and `journals` journals over 30 months (purchases, a share at partners; redemptions,
    /// some at the burn partner; refunds and cancellations), posted through the store
    /// unless there already; then the jobs (expiry) as of now and the first 24 months'
    /// statements closed. Prints a JSON summary.
    Money {
        #[arg(long, default_value_t = 1_000_000)]
        members: u64,
        #[arg(long, default_value_t = 10_000_000)]
        journals: u64,
    },
}

use fidelis_web::demo::Lcg;

const SYLLABLES: [&str; 40] = [
    "an", "ber", "car", "dal", "el", "fin", "gor", "han", "is", "jo", "kel", "lin", "mar", "nor",
    "ol", "per", "quin", "ros", "sal", "tor", "ul", "ven", "wil", "xan", "yor", "zel", "bra",
    "cle", "dre", "fro", "gla", "hel", "ri", "mo", "na", "te", "lu", "si", "ka", "do",
];

/// Generated people `from..to`: (number, first name, surname).
fn people(from: u64, to: u64) -> impl Iterator<Item = (u64, String, String)> {
    (from..to).map(|m| {
        let mut rng = Lcg(m.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
        let (first, last) = person(&mut rng);
        (m, first, last)
    })
}

/// Person `m`: a first name of two syllables (1,600), a surname of three (64,000).
fn person(rng: &mut Lcg) -> (String, String) {
    let mut word = |parts: usize| {
        let w: String = (0..parts)
            .map(|_| SYLLABLES[rng.next(40) as usize])
            .collect();
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    };
    (word(2), word(3))
}

/// Median and 95th percentile of `samples` (milliseconds).
fn spread(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
}

pub async fn run(database: &str, command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::ChurnCdnow {
            sample,
            summaries_out,
            runs,
        } => {
            let report = super::bench_analytics::cdnow(&sample, &summaries_out, runs)?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::ChurnPopulation {
            members,
            seed,
            members_out,
            journals_out,
        } => {
            let out = members_out.as_deref().zip(journals_out.as_deref());
            let report = super::bench_analytics::population(members, seed, out)?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Generate {
            members,
            journals,
            members_out,
            journals_out,
        } => {
            let mut out = BufWriter::new(
                std::fs::File::create(&members_out)
                    .with_context(|| members_out.display().to_string())?,
            );
            for m in 0..members {
                writeln!(
                    out,
                    r#"{{"member":"M{m:07}","profile":{{"name":"Member {m}"}},"enrolled_at":"2025-01-01T00:00:00Z"}}"#
                )?;
            }
            out.flush()?;
            let mut out = BufWriter::new(
                std::fs::File::create(&journals_out)
                    .with_context(|| journals_out.display().to_string())?,
            );
            for line in fidelis_store::bare::purchase_lines(members, journals) {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::BareBatch {
            members,
            journals,
            batch,
        } => {
            let store = connect(database).await?;
            let seconds = fidelis_store::bare::run(&store, members, journals, batch).await?;
            println!(
                "{}",
                serde_json::json!({"journals": journals, "seconds": seconds, "per_second": journals as f64 / seconds})
            );
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::MembersSearch { members, queries } => {
            members_search(database, members, queries).await
        }
        BenchCommand::Pages {
            members,
            journals,
            queries,
        } => pages(database, members, journals, queries).await,
        BenchCommand::Money { members, journals } => money(database, members, journals).await,
    }
}

/// Program `code` from the retail template as shipped, created at `at` unless there.
async fn retail_program(
    store: &fidelis_store::Store,
    code: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(std::sync::Arc<fidelis_store::LoadedProgram>, bool)> {
    if let Some(p) = store.program(code).await? {
        return Ok((p, false));
    }
    let template = fidelis_core::templates::find("retail").context("the retail template")?;
    let document: fidelis_core::program::ProgramDocument =
        yaml_serde::from_str(template.source).context("the retail template")?;
    let program = fidelis_core::program::Program::compile(&document, Some(code))
        .map_err(|p| anyhow::anyhow!("retail template: {}", p[0]))?;
    store
        .put_program(&program, at, &fidelis_store::Actor::cli())
        .await?;
    Ok((store.require_program(code).await?, true))
}

/// Program `search` (the retail template as shipped) with `members` generated people
/// (names, emails, phones), enrolled unless there already; and the first enrolment instant.
async fn search_program(
    store: &fidelis_store::Store,
    members: u64,
) -> Result<(
    std::sync::Arc<fidelis_store::LoadedProgram>,
    chrono::DateTime<chrono::Utc>,
)> {
    use chrono::{Duration, TimeZone, Utc};
    use fidelis_store::{Enrollment, MemberQuery, MemberSort};
    use std::time::Instant;

    let start = Utc
        .with_ymd_and_hms(2021, 1, 1, 0, 0, 0)
        .single()
        .context("an instant")?;
    let (program, _) = retail_program(store, "search", start).await?;
    let enrolled = store
        .list_members(
            &program,
            &MemberQuery {
                sort: MemberSort::ExternalIdDesc,
                limit: 1,
                ..MemberQuery::default()
            },
        )
        .await?
        .members
        .first()
        .and_then(|m| m.external_id.strip_prefix('S')?.parse::<u64>().ok())
        .map_or(0, |last| last + 1);
    if enrolled < members {
        let began = Instant::now();
        let total = members - enrolled;
        for from in (enrolled..members).step_by(10_000) {
            let batch: Vec<Enrollment> = people(from, (from + 10_000).min(members))
                .map(|(m, first, last)| Enrollment {
                    external_id: fidelis_core::ids::ExternalId::parse(&format!("S{m:08}"))
                        .expect("generated ids are valid"),
                    profile: serde_json::json!({
                        "name": format!("{first} {last}"),
                        "email": format!("{}.{}{m}@example.com", first.to_lowercase(), last.to_lowercase()),
                        "phone": format!("+44 7{:03} {:06}", m / 1_000_000 % 1_000, m % 1_000_000),
                    }),
                    enrolled_at: start + Duration::seconds((m * 157) as i64),
                })
                .collect();
            store.enroll_many(&program, &batch, Utc::now()).await?;
        }
        let seconds = began.elapsed().as_secs_f64();
        eprintln!(
            "enrolled {total} members in {seconds:.1} s ({:.0}/s)",
            total as f64 / seconds
        );
    }
    Ok((program, start))
}

async fn members_search(database: &str, members: u64, queries: u64) -> Result<ExitCode> {
    use chrono::Duration;
    use fidelis_core::members::SearchQuery;
    use fidelis_store::{MemberQuery, MemberSort};
    use std::time::Instant;

    let store = connect(database).await?;
    let (program, start) = search_program(&store, members).await?;
    store.analyze_for_bench().await?;

    // Each kind of query, on members spread over the whole range.
    let mut rng = Lcg(20_261_202);
    let mut samples: Vec<(&str, Vec<f64>, usize)> = Vec::new();
    let kinds = [
        "lookup by external id (baseline)",
        "search a surname",
        "search first and last name",
        "search an email prefix",
        "search a phone prefix",
        "search an external id prefix",
        "list newest first, page 1",
        "list by external id, a page deep in",
        "list active, enrolled in a month",
    ];
    for kind in kinds {
        let mut times = Vec::new();
        let mut found = 0usize;
        for _ in 0..queries {
            let m = rng.next(members);
            let (_, first, last) = people(m, m + 1).next().context("a person")?;
            let search = |q: &str| SearchQuery::parse(q).map_err(|e| anyhow::anyhow!(e));
            let mut query = MemberQuery {
                limit: 50,
                ..MemberQuery::default()
            };
            match kind {
                "search a surname" => query.search = Some(search(&last)?),
                "search first and last name" => {
                    query.search = Some(search(&format!("{} {}", &first[..3], last))?)
                }
                "search an email prefix" => {
                    query.search = Some(search(&format!(
                        "{}.{}",
                        first.to_lowercase(),
                        &last.to_lowercase()[..4]
                    ))?)
                }
                "search a phone prefix" => {
                    query.search = Some(search(&format!(
                        "+44 7{:03} {:04}",
                        m / 1_000_000 % 1_000,
                        m % 1_000_000 / 100
                    ))?)
                }
                "search an external id prefix" => {
                    query.search = Some(search(&format!("S{:06}", m / 100))?)
                }
                "list newest first, page 1" => query.sort = MemberSort::EnrolledDesc,
                "list by external id, a page deep in" => {
                    query.after = Some(fidelis_store::MemberCursor::ExternalId(format!("S{m:08}")))
                }
                "list active, enrolled in a month" => {
                    let from = start + Duration::seconds((m * 157) as i64);
                    query.status = Some(fidelis_core::ledger::MemberStatus::Active);
                    query.enrolled_from = Some(from);
                    query.enrolled_until = Some(from + Duration::days(30));
                    query.sort = MemberSort::Enrolled;
                }
                _ => {}
            }
            let began = Instant::now();
            if kind.starts_with("lookup") {
                found += usize::from(store.member(&program, &format!("S{m:08}")).await?.is_some());
            } else {
                found += store.list_members(&program, &query).await?.members.len();
            }
            times.push(began.elapsed().as_secs_f64() * 1_000.0);
        }
        samples.push((kind, times, found));
    }
    let (baseline, _) = spread(samples[0].1.clone());
    let report: Vec<serde_json::Value> = samples
        .into_iter()
        .map(|(kind, times, found)| {
            let (median, p95) = spread(times);
            serde_json::json!({
                "query": kind,
                "median_ms": (median * 1000.0).round() / 1000.0,
                "p95_ms": (p95 * 1000.0).round() / 1000.0,
                "vs_lookup": (median / baseline * 10.0).round() / 10.0,
                "found_per_query": found as f64 / queries as f64,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "database": store.dialect(), "members": members, "queries": queries, "results": report,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

/// Median and 99th percentile, in milliseconds.
fn median_p99(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

async fn pages(database: &str, members: u64, journals: u64, queries: u64) -> Result<ExitCode> {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use chrono::{Duration, Utc};
    use fidelis_core::journal::{Journal, JournalDocument};
    use fidelis_store::{NewSession, Prepared, UserRecord};
    use http_body_util::BodyExt;
    use std::time::Instant;
    use tower::ServiceExt;

    let store = connect(database).await?;
    let (program, start) = search_program(&store, members).await?;
    let now = Utc::now();
    let have = u64::try_from(store.journal_count(&program).await?).unwrap_or(0);
    if have < journals {
        // Purchases in time order over the last year, each by a member enrolled by then.
        let from = now - Duration::days(360);
        let span = (now - Duration::hours(1) - from).num_seconds().max(1) as u64;
        let mut rng = Lcg(20_261_203 ^ have);
        let began = Instant::now();
        let mut posted = 0u64;
        let mut batch = Vec::with_capacity(5_000);
        for i in have..journals {
            let at = from + Duration::seconds((i * span / journals) as i64);
            let enrolled_by = ((at - start).num_seconds().max(0) as u64 / 157).clamp(1, members);
            let m = rng.next(enrolled_by);
            let cents = 500 + rng.next(20_000);
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let category = ["shoes", "socks", "jackets", "bags", "shirts"][rng.next(5) as usize];
            let doc: JournalDocument = serde_json::from_value(serde_json::json!({
                "external_id": format!("bp-{i}"), "member": format!("S{m:08}"), "type": "purchase",
                "occurred_at": at.to_rfc3339(), "amount": amount, "currency": "EUR",
                "lines": [{"line_id": "1", "sku": format!("{category}-{}", rng.next(90)), "category": category,
                           "quantity": 1, "amount": amount}]
            }))?;
            let journal = Journal::parse(&doc, &program.program)
                .map_err(|e| anyhow::anyhow!("a generated journal: {e:?}"))?;
            batch.push(
                Prepared::new(journal, &program.program)
                    .map_err(|e| anyhow::anyhow!("a generated journal: {e:?}"))?,
            );
            if batch.len() == 5_000 || i + 1 == journals {
                let results = store.post_journals(&program, &batch, now, None).await?;
                posted += results.iter().filter(|r| r.is_ok()).count() as u64;
                batch.clear();
                if (i + 1) % 1_000_000 == 0 {
                    eprintln!(
                        "posted {} journals ({:.0}/s)",
                        i + 1 - have,
                        (i + 1 - have) as f64 / began.elapsed().as_secs_f64()
                    );
                }
            }
        }
        eprintln!(
            "posted {posted} of {} journals in {:.0} s",
            journals - have,
            began.elapsed().as_secs_f64()
        );
    }
    store.analyze_for_bench().await?;

    // A signed-in administrator, and the router every request of `fidelis serve` meets.
    let email = "bench@pages.example";
    if store.user_by_email(email).await?.is_none() {
        store
            .create_user(
                &UserRecord {
                    id: 0,
                    email: email.into(),
                    password_hash: fidelis_web::auth::hash_password("not used for the benchmark")
                        .map_err(|e| anyhow::anyhow!(e.detail))?,
                    role: "admin".into(),
                    program: None,
                    partner: None,
                    member: None,
                },
                now,
            )
            .await?;
    }
    let user = store
        .user_by_email(email)
        .await?
        .context("the bench user")?;
    let cookie = fidelis_web::auth::new_token();
    store
        .create_session(&NewSession {
            id_hash: fidelis_web::auth::token_hash(&cookie),
            user_id: Some(user.id),
            program: None,
            member: None,
            csrf: fidelis_web::auth::new_token(),
            created_at: now,
            expires_at: now + Duration::hours(2),
        })
        .await?;
    let router = fidelis_web::app(fidelis_web::AppState::new(
        store.clone(),
        fidelis_web::ServerConfig::default(),
    ));
    let get = |path: String| {
        let router = router.clone();
        let cookie = format!("fidelis_console={cookie}");
        async move {
            let request = Request::get(&path)
                .header(header::COOKIE, cookie)
                .body(Body::empty())?;
            let began = Instant::now();
            let response = router.oneshot(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            let ms = began.elapsed().as_secs_f64() * 1_000.0;
            anyhow::ensure!(
                status == StatusCode::OK,
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
            Ok::<_, anyhow::Error>((ms, body.len()))
        }
    };

    let mut rng = Lcg(20_261_204);
    let mut report = Vec::new();
    let mut baseline = Vec::new();
    let (mut search, mut view) = (Vec::new(), Vec::new());
    for _ in 0..queries {
        let m = rng.next(members);
        let (_, _, last) = people(m, m + 1).next().context("a person")?;
        let began = Instant::now();
        store.member(&program, &format!("S{m:08}")).await?;
        baseline.push(began.elapsed().as_secs_f64() * 1_000.0);
        search.push(
            get(format!("/console/programs/search/members?q={last}"))
                .await?
                .0,
        );
        view.push(
            get(format!("/console/programs/search/members/S{m:08}"))
                .await?
                .0,
        );
    }
    // The dashboard's rollup catching up with the ledger (the first time: all of it).
    let began = Instant::now();
    store.roll_up().await?;
    let catch_up = began.elapsed().as_secs_f64() * 1_000.0;
    // The dashboard: computed (the first view, and each refresh), then as kept.
    let mut computed = Vec::new();
    for _ in 0..3 {
        let began = Instant::now();
        let bounds: Vec<_> = (0..=12)
            .map(|i| now - Duration::days(30 * (12 - i)))
            .collect();
        store.dashboard(&program, &bounds, now).await?;
        computed.push(began.elapsed().as_secs_f64() * 1_000.0);
    }
    // The first view starts the computation and says so; wait for the figures (the page
    // with its charts is far longer than the notice).
    let waiting = Instant::now();
    while get("/console/programs/search".to_owned()).await?.1 < 10_000 {
        anyhow::ensure!(
            waiting.elapsed().as_secs() < 900,
            "the dashboard was not computed in 15 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut kept = Vec::new();
    for _ in 0..queries {
        kept.push(get("/console/programs/search".to_owned()).await?.0);
    }
    let (base_median, _) = median_p99(baseline.clone());
    for (name, samples) in [
        ("member lookup in the store (baseline)", baseline),
        ("member search page", search),
        ("member 360° page", view),
        ("dashboard page (figures kept)", kept),
        ("dashboard figures computed", computed),
        (
            "dashboard rollup catching up (first run: the whole ledger)",
            vec![catch_up],
        ),
    ] {
        let (median, p99) = median_p99(samples);
        report.push(serde_json::json!({
            "page": name, "median_ms": (median * 100.0).round() / 100.0, "p99_ms": (p99 * 100.0).round() / 100.0,
            "vs_lookup": (median / base_median * 10.0).round() / 10.0,
        }));
    }
    let journals_now = store.journal_count(&program).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "database": store.dialect(), "members": members, "journals": journals_now, "queries": queries, "results": report,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

/// The partners of the `money` program: code and document.
const MONEY_PARTNERS: [(&str, &str); 4] = [
    (
        "airline",
        r#"{"name": "Airline", "roles": "earn", "billing": "prepaid", "cost_per_point": "0.008",
            "alert_below": 100000, "when_empty": "owe"}"#,
    ),
    (
        "fuel",
        r#"{"name": "Fuel stations", "roles": "earn", "billing": "prepaid", "cost_per_point": "0.009",
            "alert_below": 50000}"#,
    ),
    (
        "bank",
        r#"{"name": "Bank card", "roles": "earn", "billing": "postpaid", "cost_per_point": "0.0125"}"#,
    ),
    (
        "hotel",
        r#"{"name": "Hotels", "roles": "burn", "reimbursement_per_point": "0.006"}"#,
    ),
];

/// What generated journal `i` of the `money` program is (recomputable from `i` alone, so a
/// refund can name the purchase it returns).
enum MoneyJournal {
    /// Member, cents, partner.
    Purchase(u64, u64, Option<&'static str>),
    /// Member, points, partner.
    Redemption(u64, u64, Option<&'static str>),
    /// Of purchase `j`: a part (refund) or all of it (cancellation).
    Refund(u64),
    Cancellation(u64),
}

fn money_journal(i: u64, members: u64) -> MoneyJournal {
    let mut rng = Lcg(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x0BAD_5EED);
    let kind = rng.next(100);
    let member = rng.next(members);
    // Returns name a purchase far enough back to be in an earlier batch.
    let back = 10_000 + rng.next(200_000);
    if (75..90).contains(&kind) {
        let partner = (rng.next(10) < 6).then_some("hotel");
        return MoneyJournal::Redemption(member, 20 + rng.next(100), partner);
    }
    if kind >= 90 && i >= back {
        let j = i - back;
        if let MoneyJournal::Purchase(..) = money_journal(j, members) {
            return if kind < 97 {
                MoneyJournal::Refund(j)
            } else {
                MoneyJournal::Cancellation(j)
            };
        }
    }
    let partner = match rng.next(20) {
        0..=3 => Some("airline"),
        4..=5 => Some("fuel"),
        6..=8 => Some("bank"),
        _ => None,
    };
    MoneyJournal::Purchase(member, 500 + rng.next(20_000), partner)
}

async fn money(database: &str, members: u64, journals: u64) -> Result<ExitCode> {
    use chrono::{Datelike, Duration, TimeZone, Utc};
    use fidelis_core::journal::{Journal, JournalDocument};
    use fidelis_store::{Actor, Enrollment, Prepared};
    use std::time::Instant;

    let store = connect(database).await?;
    let now = Utc::now();
    // Thirty months back, at a month's start: the first six months' points have expired.
    let month = |n: u32| -> Result<chrono::DateTime<Utc>> {
        Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .and_then(|m| {
                m.checked_sub_months(chrono::Months::new(30))?
                    .checked_add_months(chrono::Months::new(n))
            })
            .context("a month")
    };
    let start = month(0)?;
    let (program, created) = retail_program(&store, "money", start).await?;
    if created {
        for (code, document) in MONEY_PARTNERS {
            let doc: fidelis_core::partners::PartnerDocument = serde_json::from_str(document)?;
            store
                .put_partner(&program, code, &doc, start, &Actor::cli())
                .await?;
        }
        // Packs against the partners' accruals (about 8 and 16 points a journal): the
        // fuel stations' never runs out; the airline's does, two thirds in, and it owes.
        for (code, points) in [("airline", 12 * journals), ("fuel", 20 * journals)] {
            let points = i64::try_from(points.max(1)).unwrap_or(i64::MAX);
            store
                .top_up_partner(&program, code, "opening", points, start, &Actor::cli())
                .await?;
        }
    }
    let began = Instant::now();
    if store
        .member(&program, &format!("P{:08}", members.saturating_sub(1)))
        .await?
        .is_none()
    {
        for from in (0..members).step_by(10_000) {
            let last = (from + 10_000).min(members) - 1;
            if store
                .member(&program, &format!("P{last:08}"))
                .await?
                .is_some()
            {
                continue;
            }
            let batch: Vec<Enrollment> = (from..(from + 10_000).min(members))
                .map(|m| Enrollment {
                    external_id: fidelis_core::ids::ExternalId::parse(&format!("P{m:08}"))
                        .expect("generated ids are valid"),
                    profile: serde_json::json!({"name": format!("Member {m}")}),
                    enrolled_at: start,
                })
                .collect();
            store.enroll_many(&program, &batch, now).await?;
        }
        eprintln!(
            "enrolled {members} members in {:.0} s",
            began.elapsed().as_secs_f64()
        );
    }
    let have = u64::try_from(store.journal_count(&program).await?).unwrap_or(0);
    let began = Instant::now();
    let (mut posted, mut refused) = (0u64, 0u64);
    let mut codes = std::collections::BTreeMap::<&'static str, u64>::new();
    if have < journals {
        let end = now - Duration::hours(1);
        let span = (end - start).num_seconds().max(1) as u64;
        let at = |i: u64| start + Duration::seconds((i * span / journals) as i64);
        let mut batch = Vec::with_capacity(5_000);
        for i in have..journals {
            let occurred_at = at(i).to_rfc3339();
            let amount = |cents: u64| format!("{}.{:02}", cents / 100, cents % 100);
            let doc = match money_journal(i, members) {
                MoneyJournal::Purchase(m, cents, partner) => serde_json::json!({
                    "external_id": format!("mj-{i}"), "member": format!("P{m:08}"),
                    "type": "purchase", "occurred_at": occurred_at,
                    "amount": amount(cents), "currency": "EUR", "partner": partner,
                }),
                MoneyJournal::Redemption(m, points, partner) => serde_json::json!({
                    "external_id": format!("mj-{i}"), "member": format!("P{m:08}"),
                    "type": "redemption", "occurred_at": occurred_at,
                    "currency": "points", "points": points, "partner": partner,
                }),
                MoneyJournal::Refund(j) | MoneyJournal::Cancellation(j) => {
                    let MoneyJournal::Purchase(m, cents, _) = money_journal(j, members) else {
                        anyhow::bail!("journal {j} is not a purchase");
                    };
                    let mut doc = serde_json::json!({
                        "external_id": format!("mj-{i}"), "member": format!("P{m:08}"),
                        "occurred_at": occurred_at, "original_external_id": format!("mj-{j}"),
                    });
                    if let MoneyJournal::Refund(_) = money_journal(i, members) {
                        doc["type"] = "refund".into();
                        doc["amount"] = amount(cents / 2).into();
                        doc["currency"] = "EUR".into();
                    } else {
                        doc["type"] = "cancellation".into();
                    }
                    doc
                }
            };
            let mut doc = doc;
            if doc["partner"].is_null() {
                if let Some(o) = doc.as_object_mut() {
                    o.remove("partner");
                }
            }
            let doc: JournalDocument = serde_json::from_value(doc)?;
            let journal = Journal::parse(&doc, &program.program)
                .map_err(|e| anyhow::anyhow!("a generated journal: {e:?}"))?;
            batch.push(
                Prepared::new(journal, &program.program)
                    .map_err(|e| anyhow::anyhow!("a generated journal: {e:?}"))?,
            );
            if batch.len() == 5_000 || i + 1 == journals {
                let results = store.post_journals(&program, &batch, now, None).await?;
                for r in &results {
                    match r {
                        Ok(_) => posted += 1,
                        Err(e) => {
                            refused += 1;
                            *codes.entry(e.code()).or_default() += 1;
                        }
                    }
                }
                batch.clear();
                if (i + 1) % 500_000 == 0 {
                    eprintln!(
                        "posted {} journals ({:.0}/s)",
                        i + 1 - have,
                        (i + 1 - have) as f64 / began.elapsed().as_secs_f64()
                    );
                }
            }
        }
        eprintln!(
            "posted {posted} journals, {refused} refused (a redemption beyond the balance, a \
             return of a returned purchase), in {:.0} s",
            began.elapsed().as_secs_f64()
        );
        // The jobs as of now: the points of the first six months expire.
        let began = Instant::now();
        let settled = store.run_jobs(&program, now).await?;
        eprintln!(
            "jobs: {} members settled in {:.0} s",
            settled.members,
            began.elapsed().as_secs_f64()
        );
        // Each partner's first 24 months closed, month by month.
        let began = Instant::now();
        for (code, _) in MONEY_PARTNERS {
            for n in 0..24 {
                store
                    .close_settlement(&program, code, month(n)?, month(n + 1)?, now, &Actor::cli())
                    .await?;
            }
        }
        eprintln!(
            "closed 24 months of 4 partners in {:.0} s",
            began.elapsed().as_secs_f64()
        );
    }
    store.analyze_for_bench().await?;
    println!(
        "{}",
        serde_json::json!({
            "members": members,
            "journals": store.journal_count(&program).await?,
            "start": start,
            // Each month's start from `start` on: the periods of the statements.
            "months": (0..=30).map(month).collect::<Result<Vec<_>>>()?,
            "posted": posted,
            "refused": refused,
            "refused_by_code": codes,
        })
    );
    Ok(ExitCode::SUCCESS)
}
