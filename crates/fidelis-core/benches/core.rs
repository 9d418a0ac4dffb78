//! Benchmarks of the pure core: processing journals against in-memory ledgers, on one
//! thread. Target: at least 1,000,000 purchase journals per second on one core.
//!
//! Run with `cargo bench -p fidelis-core`.

use std::hint::black_box;

/// The allocator the `fidelis` binary runs with, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{DateTime, Duration, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fidelis_core::ids::{JournalId, MemberId};
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::ledger::{MemberLedger, MemberStatus};
use fidelis_core::process::{JournalIds, Related, process};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_core::templates;

const MEMBERS: usize = 1_000;
const JOURNALS: usize = 10_000;

/// The retail template without its promotions: the ledger's own cost (promotions have
/// their own group below).
fn retail() -> Program {
    let mut doc = retail_document();
    doc.promotions.clear();
    Program::compile(&doc, Some("bench")).expect("a valid program")
}

fn retail_document() -> ProgramDocument {
    let template = templates::find("retail").expect("the retail template");
    yaml_serde::from_str(template.source).expect("valid YAML")
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Purchase documents as an import reads them: two lines each, spread over the members.
fn purchase_documents() -> Vec<JournalDocument> {
    (0..JOURNALS)
        .map(|i| {
            let cents = 500 + (i * 7_727) % 25_000;
            let shoes = cents * 3 / 4;
            serde_json::from_value(serde_json::json!({
                "external_id": format!("pos-{i}"),
                "member": format!("M{}", i % MEMBERS),
                "type": "purchase",
                "occurred_at": (start() + Duration::seconds(i as i64)).to_rfc3339(),
                "amount": format!("{}.{:02}", cents / 100, cents % 100),
                "currency": "EUR",
                "lines": [
                    {"line_id": "1", "category": "shoes", "quantity": 1, "amount": format!("{}.{:02}", shoes / 100, shoes % 100)},
                    {"line_id": "2", "category": "socks", "quantity": 2, "amount": format!("{}.{:02}", (cents - shoes) / 100, (cents - shoes) % 100)},
                ]
            }))
            .unwrap()
        })
        .collect()
}

fn ledgers(program: &Program) -> Vec<MemberLedger> {
    (0..MEMBERS)
        .map(|m| {
            let mut ledger = MemberLedger::new(MemberId(m as i64), MemberStatus::Active, program);
            // As the store loads them for an accrual: accounts only, no buckets.
            ledger.buckets_loaded = false;
            ledger
        })
        .collect()
}

fn process_all(
    program: &Program,
    journals: &[Journal],
    mut ledgers: Vec<MemberLedger>,
    now: DateTime<Utc>,
) -> usize {
    let mut written = 0;
    for (i, journal) in journals.iter().enumerate() {
        let ledger = &mut ledgers[i % MEMBERS];
        let ids = JournalIds {
            main: JournalId(2 * i as i64 + 1),
            settlement: JournalId(2 * i as i64 + 2),
        };
        let processed = process(program, ledger, journal, &mut Related::default(), ids, now)
            .expect("processed");
        written += processed.record.entries.len();
        // The store drains what it writes; so does the benchmark.
        ledger.buckets.clear();
    }
    written
}

fn benches(c: &mut Criterion) {
    let program = retail();
    let documents = purchase_documents();
    let journals: Vec<Journal> = documents
        .iter()
        .map(|d| Journal::parse(d, &program).unwrap())
        .collect();
    let now = start() + Duration::days(1);

    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(JOURNALS as u64));
    group.bench_function("process purchases", |b| {
        b.iter_batched(
            || ledgers(&program),
            |ledgers| black_box(process_all(&program, &journals, ledgers, now)),
            BatchSize::LargeInput,
        )
    });
    let with_template_promotions =
        Program::compile(&retail_document(), Some("bench")).expect("a valid program");
    group.bench_function("process purchases, with the template's 4 promotions", |b| {
        b.iter_batched(
            || ledgers(&with_template_promotions),
            |ledgers| {
                black_box(process_all(
                    &with_template_promotions,
                    &journals,
                    ledgers,
                    now,
                ))
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("parse and process purchases", |b| {
        b.iter_batched(
            || ledgers(&program),
            |ledgers| {
                let parsed: Vec<Journal> = documents
                    .iter()
                    .map(|d| Journal::parse(d, &program).unwrap())
                    .collect();
                black_box(process_all(&program, &parsed, ledgers, now))
            },
            BatchSize::LargeInput,
        )
    });

    // Redemptions draw on loaded buckets: each member holds ten, and spends from them.
    let mut loaded = ledgers(&program);
    for (i, journal) in journals.iter().enumerate() {
        let ledger = &mut loaded[i % MEMBERS];
        ledger.buckets_loaded = true;
        let ids = JournalIds {
            main: JournalId(2 * i as i64 + 1),
            settlement: JournalId(2 * i as i64 + 2),
        };
        process(&program, ledger, journal, &mut Related::default(), ids, now).unwrap();
    }
    let redemptions: Vec<Journal> = (0..JOURNALS)
        .map(|i| {
            let doc: JournalDocument = serde_json::from_value(serde_json::json!({
                "external_id": format!("r-{i}"), "member": format!("M{}", i % MEMBERS), "type": "redemption",
                "occurred_at": now.to_rfc3339(), "currency": "points", "points": 3
            }))
            .unwrap();
            Journal::parse(&doc, &program).unwrap()
        })
        .collect();
    group.bench_function("process redemptions over 10 buckets", |b| {
        b.iter_batched(
            || loaded.clone(),
            |mut ledgers| {
                for (i, journal) in redemptions.iter().enumerate() {
                    let ids = JournalIds {
                        main: JournalId(1_000_000 + 2 * i as i64),
                        settlement: JournalId(1_000_001 + 2 * i as i64),
                    };
                    black_box(
                        process(
                            &program,
                            &mut ledgers[i % MEMBERS],
                            journal,
                            &mut Related::default(),
                            ids,
                            now,
                        )
                        .unwrap(),
                    );
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The retail program with `n` active promotions of mixed kinds: journal conditions on
/// amount, channel and local time, line conditions on category and sku, fixed points,
/// points per money, multipliers, qualifying points, vouchers; some exclusive.
fn with_promotions(n: usize) -> Program {
    let template = templates::find("retail").expect("the retail template");
    let mut doc: ProgramDocument = yaml_serde::from_str(template.source).expect("valid YAML");
    doc.promotions.clear();
    let categories = ["shoes", "socks", "bags", "hats", "coats"];
    for i in 0..n {
        let category = categories[i % categories.len()];
        let (scope, condition, action) = match i % 6 {
            0 => (
                "journal",
                format!("journal.amount >= {}.0 && journal.channel == 'web'", 20 + i),
                serde_json::json!({"type": "fixed", "currency": "points", "points": 10 + i}),
            ),
            1 => (
                "line",
                format!("line.category == '{category}' && line.quantity >= 1"),
                serde_json::json!({"type": "multiplier", "currency": "points", "factor": "2"}),
            ),
            2 => (
                "journal",
                format!("local.weekday == {} || local.hour < 8", 1 + i % 7),
                serde_json::json!({"type": "per_money", "currency": "points", "rate": "0.5"}),
            ),
            3 => (
                "line",
                format!("line.sku.startsWith('SKU-{i}')"),
                serde_json::json!({"type": "fixed", "currency": "points", "points": 5}),
            ),
            4 => (
                "journal",
                format!(
                    "journal.lines.exists(l, l.category == '{category}') && journal.amount > 10.0"
                ),
                serde_json::json!({"type": "per_money", "currency": "status", "rate": "1"}),
            ),
            _ => (
                "journal",
                format!("journal.store == 'store-{i}' && member.balances.points > 100"),
                serde_json::json!({"type": "voucher", "voucher": "ten-off"}),
            ),
        };
        doc.promotions.push(
            serde_json::from_value(serde_json::json!({
                "code": format!("promo-{i}"),
                "name": format!("Promotion {i}"),
                "status": "active",
                "starts_at": "2026-01-01",
                "ends_at": "2027-01-01",
                "scope": scope,
                "condition": condition,
                "priority": i % 10,
                "exclusive": i % 50 == 49,
                "actions": [action],
            }))
            .expect("a promotion document"),
        );
    }
    doc.vouchers.push(
        serde_json::from_value(serde_json::json!({
            "code": "ten-off", "name": "Ten off", "value": {"fixed": "10.00"}
        }))
        .expect("a voucher document"),
    );
    Program::compile(&doc, Some("bench")).expect("a valid program")
}

fn promotions(c: &mut Criterion) {
    let now = start() + Duration::days(1);
    let document: JournalDocument = serde_json::from_value(serde_json::json!({
        "external_id": "pos-1", "member": "M1", "type": "purchase",
        "occurred_at": start().to_rfc3339(), "amount": "250.00", "currency": "EUR",
        "channel": "web", "store": "store-5",
        "lines": [
            {"line_id": "1", "sku": "SKU-1", "category": "shoes", "quantity": 1, "amount": "120.00"},
            {"line_id": "2", "sku": "SKU-2", "category": "socks", "quantity": 3, "amount": "15.00"},
            {"line_id": "3", "sku": "SKU-3", "category": "bags", "quantity": 1, "amount": "80.00"},
            {"line_id": "4", "sku": "SKU-4", "category": "hats", "quantity": 1, "amount": "25.00"},
            {"line_id": "5", "sku": "SKU-5", "category": "gloves", "quantity": 1, "amount": "10.00"},
        ]
    }))
    .unwrap();
    let mut group = c.benchmark_group("promotions");
    group.throughput(Throughput::Elements(1));
    for n in [0, 200] {
        let program = with_promotions(n);
        let journal = Journal::parse(&document, &program).unwrap();
        let fresh = MemberLedger::new(MemberId(1), MemberStatus::Active, &program);
        let fidelis_core::journal::JournalBody::Accrual(accrual) = &journal.body else {
            unreachable!("a purchase")
        };
        let base = [fidelis_core::promotions::BasePoints {
            currency: fidelis_core::ids::CurrencyIx(0),
            total: 250,
            per_line: vec![120, 15, 80, 25, 10],
        }];
        group.bench_function(
            format!("evaluate {n} active promotions for a 5-line journal"),
            |b| {
                b.iter(|| {
                    let mut counters = fidelis_core::promotions::Counters::default();
                    let member = fidelis_core::promotions::Member {
                        id: MemberId(1),
                        external: "M-1",
                        tiers: &[],
                        facts: None,
                        balances: &[0, 0],
                        granted: &[],
                        counters: &mut counters,
                        explain: false,
                    };
                    black_box(fidelis_core::promotions::evaluate(
                        &program,
                        accrual,
                        &base,
                        member,
                        start(),
                    ))
                })
            },
        );
        group.bench_function(
            format!("process a 5-line journal, {n} active promotions"),
            |b| {
                b.iter_batched_ref(
                    || fresh.clone(),
                    |ledger| {
                        let ids = JournalIds {
                            main: JournalId(1),
                            settlement: JournalId(2),
                        };
                        black_box(
                            process(
                                &program,
                                ledger,
                                &journal,
                                &mut Related::default(),
                                ids,
                                now,
                            )
                            .unwrap(),
                        )
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(core, benches, promotions);
criterion_main!(core);
