//! What persisting a journal costs, to set beside the core's evaluation costs
//! (`cargo bench -p fidelis-core`; `cargo bench --workspace` runs both in one command).
//!
//! SQLite in WAL mode with durable commits, on a temporary file: one 5-line purchase per
//! transaction (a realtime journal), and 1,000 per transaction (an import batch), for the
//! retail template without promotions.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_core::templates;
use fidelis_store::{Actor, Enrollment, LoadedProgram, Prepared, Store};

const MEMBERS: usize = 1_000;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn purchase(program: &Program, n: usize) -> Prepared {
    let doc: JournalDocument = serde_json::from_value(serde_json::json!({
        "external_id": format!("pos-{n}"), "member": format!("M{}", n % MEMBERS), "type": "purchase",
        "occurred_at": start().to_rfc3339(), "amount": "250.00", "currency": "EUR",
        "lines": [
            {"line_id": "1", "sku": "SKU-1", "category": "shoes", "quantity": 1, "amount": "120.00"},
            {"line_id": "2", "sku": "SKU-2", "category": "socks", "quantity": 3, "amount": "15.00"},
            {"line_id": "3", "sku": "SKU-3", "category": "bags", "quantity": 1, "amount": "80.00"},
            {"line_id": "4", "sku": "SKU-4", "category": "hats", "quantity": 1, "amount": "25.00"},
            {"line_id": "5", "sku": "SKU-5", "category": "gloves", "quantity": 1, "amount": "10.00"},
        ]
    }))
    .unwrap();
    Prepared::new(Journal::parse(&doc, program).unwrap(), program).unwrap()
}

async fn setup() -> (fidelis_testkit::SqliteDb, Store, Arc<LoadedProgram>) {
    let db = fidelis_testkit::sqlite_db();
    let store = Store::connect(&db.url).await.unwrap();
    let template = templates::find("retail").unwrap();
    let mut doc: ProgramDocument = yaml_serde::from_str(template.source).unwrap();
    doc.promotions.clear();
    let program = Program::compile(&doc, Some("bench")).unwrap();
    let (loaded, _) = store
        .put_program(&program, start(), &Actor::cli())
        .await
        .unwrap();
    let members: Vec<Enrollment> = (0..MEMBERS)
        .map(|m| Enrollment {
            external_id: ExternalId::parse(&format!("M{m}")).unwrap(),
            profile: serde_json::json!({}),
            enrolled_at: start() - Duration::days(1),
        })
        .collect();
    store.enroll_many(&loaded, &members, start()).await.unwrap();
    (db, store, loaded)
}

fn persist(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (_db, store, program) = runtime.block_on(setup());
    let now = start() + Duration::hours(1);
    let mut next = 0usize;
    let mut group = c.benchmark_group("persist (SQLite, durable)");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one 5-line purchase per transaction", |b| {
        b.iter_batched(
            || {
                next += 1;
                purchase(&program.program, next)
            },
            |journal| {
                runtime
                    .block_on(store.post_journals(&program, &[journal], now, None))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(1_000));
    group.sample_size(10);
    group.bench_function("1,000 5-line purchases per transaction", |b| {
        b.iter_batched(
            || {
                (0..1_000)
                    .map(|_| {
                        next += 1;
                        purchase(&program.program, next)
                    })
                    .collect::<Vec<_>>()
            },
            |journals| {
                runtime
                    .block_on(store.post_journals(&program, &journals, now, None))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, persist);
criterion_main!(benches);
