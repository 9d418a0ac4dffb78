//! The `fidelis` command line, driven as a user drives it: a real process, real files, a
//! real database. Every test runs against SQLite and against a throw-away PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fidelis_store::Store;

mod common;

/// Generates, for each listed test function `f(&Env)`, one test per dialect.
macro_rules! both_dialects {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let db = fidelis_testkit::sqlite_db();
                    super::$name(&super::Env::new(db.url.clone()));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Env::new(fidelis_testkit::pg_url()));
                }
            )*
        }
    };
}

both_dialects!(
    an_invalid_program_lists_every_problem_and_stores_nothing,
    programs_come_from_templates_and_files,
    an_import_applies_good_lines_and_reports_bad_ones_by_line,
    csv_imports_like_ndjson,
    csv_lines_fill_a_punch_card,
    csv_errors_are_reported_by_line,
    members_move_in_with_their_balances_tiers_and_progress,
    jobs_expire_points_once,
    the_balance_lists_every_date_on_request,
    members_are_listed_searched_and_exported,
    an_import_killed_midway_resumes_and_applies_every_journal_once,
    an_import_by_member_gives_what_file_order_gives,
    an_import_by_member_killed_midway_resumes_and_applies_every_journal_once,
    an_import_by_member_after_a_merge_starts_afresh_and_loses_nothing,
    an_import_by_member_is_refused_where_members_meet,
    random_files_import_alike_in_either_order,
    a_large_batch_leaves_what_small_batches_leave,
    vouchers_are_issued_in_bulk_and_their_codes_written_out,
    the_catalog_is_imported_line_by_line,
    a_partner_statement_is_printed_and_closed,
    the_cdnow_sample_imported_as_journals_gives_the_published_models,
    the_demo_holds_out_a_control_group_and_reports_its_weekend_bonus,
    the_airline_demo_flies_cabins_and_partners,
    the_hotel_demo_counts_elite_nights,
    the_coffee_demo_gives_the_tenth_drink,
    a_promotion_report_matches_a_hand_computation,
    a_simulation_imported_into_a_database_gives_the_same_totals,
);

struct Env {
    database: String,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(database: String) -> Self {
        Self {
            database,
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fidelis"));
        c.arg("--database")
            .arg(&self.database)
            .args(args)
            .current_dir(self.dir.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running fidelis")
    }

    /// Runs and expects success; returns standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "fidelis {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("writing a test file");
        path
    }

    fn store(&self) -> (tokio::runtime::Runtime, Store) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime.block_on(Store::connect(&self.database)).unwrap();
        (runtime, store)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SHOP: &str = r#"
code: shop
name: Shop
time_zone: Europe/Berlin
money_currency: EUR
currencies:
  - {code: points, name: Points, kind: redeemable, expiry: {policy: rolling, months: 1, round_up: end_of_month}}
earning:
  base:
    - {currency: points, rate: "1"}
  # Members here enrol as the test runs; purchases are dated when the test was written.
  days_before_enrolment: 3650
"#;

fn an_invalid_program_lists_every_problem_and_stores_nothing(env: &Env) {
    let file = env.file(
        "bad.yaml",
        "code: Shop\nname: Shop\ntime_zone: Mars/Base\nmoney_currency: EUR\ncurrencies:\n  - {code: points, name: Points, kind: spendable, expiry: {policy: rolling}}\n",
    );
    let out = env.run(&["program", "apply", path(&file)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "code:",
        "time_zone:",
        "currencies[0].kind:",
        "currencies[0].expiry:",
    ] {
        assert!(stderr.contains(path), "no problem at {path} in:\n{stderr}");
    }
    let wrong_type = env.file("wrong.yaml", "code: shop\ncurrencies: 7\n");
    let out = env.run(&["program", "apply", path(&wrong_type)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("currencies"));
    assert!(
        env.ok(&["program", "list"]).trim().is_empty(),
        "nothing was stored"
    );
}

fn programs_come_from_templates_and_files(env: &Env) {
    assert!(env.ok(&["program", "templates"]).contains("retail"));
    assert!(
        env.ok(&["program", "create", "demo", "--template", "retail"])
            .contains("program demo created")
    );
    let shown = env.ok(&["program", "show", "demo"]);
    assert!(shown.contains("months: 24"), "{shown}");
    // What `show` prints, `apply` takes back: a round trip is a new revision of the same.
    let file = env.file("demo.yaml", &shown);
    assert!(
        env.ok(&["program", "apply", path(&file)])
            .contains("updated (revision 2)")
    );
    let json = env.ok(&["program", "show", "demo", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["currencies"][0]["expiry"]["months"], 24);
    let again = env.run(&["program", "create", "demo", "--template", "retail"]);
    assert!(!again.status.success());
}

fn an_import_applies_good_lines_and_reports_bad_ones_by_line(env: &Env) {
    env.ok(&["program", "apply", path(&env.file("shop.yaml", SHOP))]);
    env.ok(&[
        "members",
        "enroll",
        "--program",
        "shop",
        "C-1",
        "--name",
        "Ada",
    ]);
    let lines = [
        r#"{"external_id": "p1", "member": "C-1", "type": "purchase", "occurred_at": "2026-11-02T10:00:00+01:00", "amount": "79.90", "currency": "EUR"}"#,
        r#"{"external_id": "p2", "member": "C-1", "type": "purchase", "occurred_at": "2026-11-02T11:00:00+01:00", "amount": "-3", "currency": "EUR"}"#,
        "this is not JSON",
        "",
        r#"{"external_id": "p3", "member": "nobody", "type": "purchase", "occurred_at": "2026-11-02T11:00:00+01:00", "amount": "5", "currency": "EUR"}"#,
        r#"{"external_id": "r1", "member": "C-1", "type": "redemption", "occurred_at": "2026-11-03T10:00:00+01:00", "currency": "points", "points": 500}"#,
        r#"{"external_id": "p4", "member": "C-1", "type": "purchase", "occurred_at": "2026-11-04T10:00:00+01:00", "amount": "20.10", "currency": "EUR", "colour": "red"}"#,
        r#"{"external_id": "r2", "member": "C-1", "type": "redemption", "occurred_at": "2026-11-05T10:00:00+01:00", "currency": "points", "points": 30}"#,
    ];
    let file = env.file("journals.ndjson", &(lines.join("\n") + "\n"));
    let out = env.run(&["journals", "import", "--program", "shop", path(&file)]);
    assert_eq!(out.status.code(), Some(3), "some lines were rejected");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 applied, 0 already applied, 5 rejected"),
        "{stdout}"
    );
    let report =
        std::fs::read_to_string(env.dir.path().join("journals.ndjson.rejected.ndjson")).unwrap();
    let rejected: Vec<serde_json::Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_line: Vec<(i64, &str)> = rejected
        .iter()
        .map(|r| (r["line"].as_i64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        by_line,
        [
            (2, "invalid_journal"),
            (3, "invalid_json"),
            (5, "unknown_member"),
            (6, "insufficient_points"),
            (7, "invalid_json")
        ]
    );
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("non-negative decimal")
    );
    assert!(
        rejected[4]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`")
    );
    let balance = env.ok(&[
        "balance",
        "--program",
        "shop",
        "C-1",
        "--as-of",
        "2026-11-06T00:00:00Z",
        "--json",
    ]);
    let balance: serde_json::Value = serde_json::from_str(&balance).unwrap();
    assert_eq!(
        balance["balances"][0]["available"], 49,
        "79 earned, 30 spent"
    );
    // Importing the same file again applies nothing twice.
    let again = env.run(&["journals", "import", "--program", "shop", path(&file)]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 applied, 2 already applied"));
}

fn csv_imports_like_ndjson(env: &Env) {
    env.ok(&["program", "apply", path(&env.file("shop.yaml", SHOP))]);
    env.ok(&["members", "enroll", "--program", "shop", "C-1"]);
    let csv = "external_id,member,type,occurred_at,amount,currency,points,original_external_id,attributes.till\n\
               p1,C-1,purchase,2026-11-02T10:00:00Z,100.00,EUR,,,7\n\
               r1,C-1,redemption,2026-11-02T11:00:00Z,,points,40,,\n\
               f1,C-1,refund,2026-11-02T12:00:00Z,25.00,EUR,,p1,\n\
               x1,C-1,purchase,2026-11-02T12:00:00Z,1.00,EUR,12.5,,\n";
    let out = env.run(&[
        "journals",
        "import",
        "--program",
        "shop",
        path(&env.file("journals.csv", csv)),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3 applied, 0 already applied, 1 rejected"),
        "{stdout}"
    );
    let balance = env.ok(&[
        "balance",
        "--program",
        "shop",
        "C-1",
        "--as-of",
        "2026-11-03T00:00:00Z",
        "--json",
    ]);
    let balance: serde_json::Value = serde_json::from_str(&balance).unwrap();
    assert_eq!(
        balance["balances"][0]["available"], 35,
        "100 earned, 40 spent, 25 refunded"
    );
    let unknown = env.run(&[
        "journals",
        "import",
        "--program",
        "shop",
        path(&env.file("bad.csv", "member,price\nC-1,3\n")),
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown CSV column \"price\""));
}

/// A `lines` column (compact `id;sku;category;quantity;amount|…` or the API's JSON) carries
/// order lines, so imported purchases count toward a punch card and refunds by line take
/// their stamps back.
fn csv_lines_fill_a_punch_card(env: &Env) {
    let cafe = format!(
        "{}promotions:\n  - {{code: tenth-drink, name: Tenth drink, status: active, scope: line, \
         condition: \"line.category == 'drinks'\", cumulative: {{measure: quantity, target: \"5\"}}, \
         actions: [{{type: fixed, currency: points, points: 100}}]}}\n",
        SHOP.replace("code: shop", "code: cafe")
    );
    env.ok(&["program", "apply", path(&env.file("cafe.yaml", &cafe))]);
    env.ok(&["members", "enroll", "--program", "cafe", "C-1"]);
    let csv = "external_id,member,type,occurred_at,currency,original_external_id,lines\r\n\
               p1,C-1,purchase,2026-11-02T10:00:00Z,EUR,,1;LATTE;drinks;2;7.00|2;CRO;food;1;3.00\r\n\
               p2,C-1,purchase,2026-11-02T11:00:00Z,EUR,,\"[{\"\"line_id\"\": \"\"1\"\", \"\"category\"\": \"\"drinks\"\", \"\"quantity\"\": 2, \"\"amount\"\": \"\"7.00\"\"}]\"\r\n\
               f1,C-1,refund,2026-11-02T12:00:00Z,EUR,p1,1;;;1;\r\n\
               p3,C-1,purchase,2026-11-02T13:00:00Z,EUR,,1;;drinks;x;1.00\r\n\
               p4,C-1,purchase,2026-11-02T14:00:00Z,EUR,,1;;drinks;1;3.50|2;;drinks;1;3.50\r\n";
    let out = env.run(&[
        "journals",
        "import",
        "--program",
        "cafe",
        path(&env.file("cafe.csv", csv)),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("4 applied, 0 already applied, 1 rejected"),
        "{stdout}"
    );
    let rejected = std::fs::read_to_string(env.dir.path().join("cafe.csv.rejected.ndjson"))
        .expect("the rejections");
    assert!(
        rejected.contains("\"line\":5") && rejected.contains("quantity \\\"x\\\""),
        "{rejected}"
    );
    // 2 + 2 - 1 = 3 stamps, then 2 more complete the card of 5 on p4.
    let (runtime, store) = env.store();
    runtime.block_on(async {
        let p = store.require_program("cafe").await.expect("the program");
        let m = store.require_member(&p, "C-1").await.expect("the member");
        let counters = store.promotion_counters(&p, &m).await.expect("counters");
        assert_eq!(
            counters,
            [("tenth-drink".to_owned(), "c:".to_owned(), 1, 0)]
        );
    });
}

/// Trust item 12: an unterminated quote swallowed the next rows (valid ones included) into
/// one rejected row; a row with extra fields was imported with the extras dropped; a
/// duplicated header column silently won. Each is reported or refused by line number.
fn csv_errors_are_reported_by_line(env: &Env) {
    env.ok(&["program", "apply", path(&env.file("shop.yaml", SHOP))]);
    env.ok(&["members", "enroll", "--program", "shop", "C-1"]);
    let csv = "external_id,member,type,occurred_at,amount,currency\n\
               p1,C-1,purchase,2026-11-02T10:00:00Z,10.00,EUR\n\
               p2,\"C-1,purchase,2026-11-02T10:00:00Z,20.00,EUR\n\
               p3,C-1,purchase,2026-11-02T10:00:00Z,30.00,EUR\n\
               p4,C-1,purchase,2026-11-02T10:00:00Z,40.00,EUR\n\
               p5,C-1,purchase,2026-11-02T10:00:00Z,50.00,EUR,surprise\n\
               p6,C-1,purchase,2026-11-02T10:00:00Z\n\
               p7,C-1,purchase,2026-11-02T10:00:00Z,70.00,EUR\n";
    let out = env.run(&[
        "journals",
        "import",
        "--program",
        "shop",
        path(&env.file("rows.csv", csv)),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("4 applied, 0 already applied, 3 rejected"),
        "{stdout}"
    );
    let report = std::fs::read_to_string(env.dir.path().join("rows.csv.rejected.ndjson")).unwrap();
    let rejected: Vec<(i64, String)> = report
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["line"].as_i64().unwrap(), r.to_string()))
        .collect();
    let lines: Vec<i64> = rejected.iter().map(|r| r.0).collect();
    assert_eq!(lines, [3, 6, 7], "{report}");
    assert!(rejected[0].1.contains("quote"), "{report}");
    assert!(
        rejected[1].1.contains("7 fields; the header has 6"),
        "{report}"
    );
    assert!(
        rejected[2].1.contains("4 fields; the header has 6"),
        "{report}"
    );
    let balance = env.ok(&[
        "balance",
        "--program",
        "shop",
        "C-1",
        "--as-of",
        "2026-11-03T00:00:00Z",
        "--json",
    ]);
    let balance: serde_json::Value = serde_json::from_str(&balance).unwrap();
    assert_eq!(balance["balances"][0]["available"], 10 + 30 + 40 + 70);
    // A header naming a column twice imports nothing.
    let twice = env.run(&[
        "journals",
        "import",
        "--program",
        "shop",
        path(&env.file(
            "twice.csv",
            "external_id,member,member,type\nq1,C-1,C-2,purchase\n",
        )),
    ]);
    assert!(!twice.status.success());
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(stderr.contains("\"member\" appears twice"), "{stderr}");
    // Running it again would not help: the operator is told to fix the file.
    assert!(stderr.contains("the file must be fixed first"), "{stderr}");
    assert!(!stderr.contains("to resume"), "{stderr}");

    // Excel writes CRLF: the same rows report the same line numbers.
    let crlf = csv
        .replace('\n', "\r\n")
        .replace("p1,", "r1,")
        .replace("p3,", "r3,");
    let out = env.run(&[
        "journals",
        "import",
        "--program",
        "shop",
        path(&env.file("excel.csv", &crlf)),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 rejected"), "{stdout}");
    let report = std::fs::read_to_string(env.dir.path().join("excel.csv.rejected.ndjson")).unwrap();
    let lines: Vec<i64> = report
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(lines, [3, 6, 7], "{report}");

    // A report from an earlier run is removed when this run rejects nothing.
    let stale = env.file("clean.csv.rejected.ndjson", "{\"line\": 2}\n");
    let out = env.run(&[
        "journals",
        "import",
        "--program",
        "shop",
        path(&env.file(
            "clean.csv",
            "external_id,member,type,occurred_at,amount,currency\nc1,C-1,purchase,2026-11-02T10:00:00Z,1.00,EUR\n",
        )),
    ]);
    assert!(out.status.success());
    assert!(!stale.exists(), "the stale report is still there");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("earlier run"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Trust item 23: an operator migrating a program brings each member's current state —
/// opening balances with their own instants, the tier with its dates and progress,
/// cumulative progress — as one `opening` journal, idempotent, refused for a member who
/// has journals; expiry and tier assessment then run on them as on any points.
fn members_move_in_with_their_balances_tiers_and_progress(env: &Env) {
    let program = r#"
code: moved
name: Moved
time_zone: Europe/Berlin
money_currency: EUR
currencies:
  - {code: points, name: Points, kind: redeemable, expiry: {policy: rolling, months: 24}}
  - {code: status, name: Status, kind: qualifying, expiry: {policy: never}}
earning:
  base:
    - {currency: points, rate: "1"}
    - {currency: status, rate: "1"}
tier_groups:
  - code: status
    currency: status
    reset: false
    tiers:
      - {code: member, threshold: 0}
      - {code: gold, threshold: 1000}
promotions:
  - code: spend-500
    name: Spend 500
    status: active
    cumulative: {measure: amount, target: "500.00"}
    actions: [{type: fixed, currency: points, points: 1000}]
"#;
    env.ok(&["program", "apply", path(&env.file("moved.yaml", program))]);
    let now = chrono::Utc::now();
    let at = |days: i64| (now + chrono::Duration::days(days)).to_rfc3339();
    let this_year = format!(
        "{}-01-02T00:00:00Z",
        chrono::Datelike::year(&now.date_naive())
    );
    let next_year = format!(
        "{}-12-31T23:00:00Z",
        chrono::Datelike::year(&now.date_naive()) + 1
    );
    let a = serde_json::json!({"member": "A", "profile": {"name": "Ada"}, "enrolled_at": "2020-01-01T00:00:00Z",
        "balances": [{"currency": "points", "points": 500, "earned_at": at(-400), "expires_at": at(30)},
                     {"currency": "points", "points": 100, "earned_at": at(-1), "available_at": at(10)}],
        "tiers": [{"group": "status", "tier": "gold", "since": this_year, "valid_until": next_year, "progress": 1200}],
        "promotions": [{"promotion": "spend-500", "progress": "450.00"}]});
    let bad = serde_json::json!({"member": "B", "balances": [{"currency": "miles", "points": 1, "earned_at": at(-1)}]});
    let plain = serde_json::json!({"member": "C"});
    let file = env.file("members.ndjson", &format!("{a}\n{bad}\n{plain}\n"));
    let out = env.run(&["members", "import", "--program", "moved", path(&file)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "2 member(s) enrolled, 0 already enrolled, 1 opened with their balances (0 already), 1 line(s) refused"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 2: invalid_opening: balances[0].currency"),
        "{stderr}"
    );
    // Again: nothing doubles.
    let again = env.run(&["members", "import", "--program", "moved", path(&file)]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(
            "0 member(s) enrolled, 1 already enrolled, 0 opened with their balances (1 already)"
        ),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let (rt, store) = env.store();
    let program = rt.block_on(store.require_program("moved")).unwrap();
    let member = rt.block_on(store.require_member(&program, "A")).unwrap();
    let balances = rt
        .block_on(store.balances(&program, &member, chrono::Utc::now()))
        .unwrap();
    assert_eq!(
        (balances[0].available, balances[0].pending),
        (500, 100),
        "{balances:?}"
    );
    assert_eq!(balances[0].expiring[0].points, 500);
    let tiers = rt
        .block_on(store.tier_standing(&program, "A", chrono::Utc::now()))
        .unwrap();
    assert_eq!(tiers[0].tier, "gold");
    // The imported progress counts: 450 + 60 reaches the 500 target.
    let line = serde_json::json!({"external_id": "p1", "member": "A", "type": "purchase", "occurred_at": at(0), "amount": "60", "currency": "EUR"});
    env.ok(&[
        "journals",
        "import",
        "--program",
        "moved",
        path(&env.file("j.ndjson", &format!("{line}\n"))),
    ]);
    let balances = rt
        .block_on(store.balances(&program, &member, chrono::Utc::now()))
        .unwrap();
    assert_eq!(
        balances[0].available,
        500 + 60 + 1000,
        "the bonus fired: {balances:?}"
    );
    // Expiry runs on opened points like any others: 30 days from now they are gone.
    let later = rt
        .block_on(store.balances(&program, &member, now + chrono::Duration::days(31)))
        .unwrap();
    assert_eq!(later[0].available, 60 + 1000 + 100, "{later:?}");
    // A member with journals is not opened.
    let c_line = serde_json::json!({"external_id": "c1", "member": "C", "type": "purchase", "occurred_at": at(0), "amount": "5", "currency": "EUR"});
    env.ok(&[
        "journals",
        "import",
        "--program",
        "moved",
        path(&env.file("c.ndjson", &format!("{c_line}\n"))),
    ]);
    let late = serde_json::json!({"member": "C", "balances": [{"currency": "points", "points": 9, "earned_at": at(-1)}]});
    let out = env.run(&[
        "members",
        "import",
        "--program",
        "moved",
        path(&env.file("late.ndjson", &format!("{late}\n"))),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("member_has_ledger"));
}

fn jobs_expire_points_once(env: &Env) {
    // Points valid for ten local days, earned ten days ago less three seconds: the jobs
    // expire them once those seconds have passed, and never run ahead of the clock.
    let short = SHOP
        .replace("code: shop", "code: short")
        .replace("months: 1, round_up: end_of_month", "days: 10");
    env.ok(&["program", "apply", path(&env.file("short.yaml", &short))]);
    env.ok(&["members", "enroll", "--program", "short", "C-1"]);
    let expiry = chrono::Utc::now() + chrono::Duration::seconds(3);
    let earned = common::earned_to_expire_at(10, expiry).to_rfc3339();
    let line = format!(
        r#"{{"external_id": "p1", "member": "C-1", "type": "purchase", "occurred_at": "{earned}", "amount": "42", "currency": "EUR"}}"#
    );
    env.ok(&[
        "journals",
        "import",
        "--program",
        "short",
        path(&env.file("j.ndjson", &line)),
    ]);
    let just_before = (expiry - chrono::Duration::seconds(1)).to_rfc3339();
    let early = env.ok(&["jobs", "run", "--program", "short", "--as-of", &just_before]);
    assert!(early.contains("0 settlement journal(s)"), "{early}");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let ahead = env.run(&["jobs", "run", "--as-of", &tomorrow]);
    assert!(!ahead.status.success());
    let stderr = String::from_utf8_lossy(&ahead.stderr);
    assert!(stderr.contains("never run ahead of the clock"), "{stderr}");
    let balance = env.ok(&["balance", "--program", "short", "C-1"]);
    assert!(balance.contains("42 available"), "{balance}");
    std::thread::sleep((expiry - chrono::Utc::now()).to_std().unwrap_or_default());
    let expiry = expiry.to_rfc3339();
    let due = env.ok(&["jobs", "run", "--as-of", &expiry]);
    assert!(
        due.contains("short: as of")
            && due.contains("1 member(s) settled, 1 settlement journal(s)"),
        "{due}"
    );
    let again = env.ok(&["jobs", "run", "--as-of", &expiry]);
    assert!(!again.contains("1 member(s) settled"), "{again}");
    let balance = env.ok(&["balance", "--program", "short", "C-1", "--as-of", &expiry]);
    assert!(balance.contains("0 available"), "{balance}");
    // The CLI's runs are in the audit log, as the API's are.
    let (rt, store) = env.store();
    let runs = rt
        .block_on(store.audit(&fidelis_store::AuditFilter {
            program: Some("short".into()),
            actor: None,
            action: Some("jobs.run".into()),
            subject: None,
            before_id: None,
            limit: 10,
        }))
        .unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs.iter().all(|(_, e)| e.actor == "cli"), "{runs:?}");
    assert_eq!(runs[1].1.after.as_ref().unwrap()["settlements"], 1);
}

/// The table shows the first five expiry dates and says how to see the rest.
fn the_balance_lists_every_date_on_request(env: &Env) {
    let long = SHOP
        .replace("code: shop", "code: long")
        .replace("months: 1, round_up: end_of_month", "days: 400");
    env.ok(&["program", "apply", path(&env.file("long.yaml", &long))]);
    env.ok(&["members", "enroll", "--program", "long", "C-1"]);
    let lines: String = (1..=7)
        .map(|d| {
            let at = (chrono::Utc::now() - chrono::Duration::days(d)).to_rfc3339();
            format!(
                "{{\"external_id\": \"p{d}\", \"member\": \"C-1\", \"type\": \"purchase\", \"occurred_at\": \"{at}\", \"amount\": \"{d}\", \"currency\": \"EUR\"}}\n"
            )
        })
        .collect();
    env.ok(&[
        "journals",
        "import",
        "--program",
        "long",
        path(&env.file("week.ndjson", &lines)),
    ]);
    let table = env.ok(&["balance", "--program", "long", "C-1"]);
    assert_eq!(table.matches(" expire ").count(), 5, "{table}");
    assert!(
        table.contains("… 2 more expiry dates (--all lists them)"),
        "{table}"
    );
    let all = env.ok(&["balance", "--program", "long", "C-1", "--all"]);
    assert_eq!(all.matches(" expire ").count(), 7, "{all}");
    assert!(!all.contains("more expiry dates"), "{all}");
}

fn members_are_listed_searched_and_exported(env: &Env) {
    env.ok(&["program", "apply", path(&env.file("shop.yaml", SHOP))]);
    let members = concat!(
        "{\"member\": \"C-1\", \"profile\": {\"name\": \"Ann Smith\", \"email\": \"ann@example.com\", \"phone\": \"+44 20 7946\"}, \"enrolled_at\": \"2026-01-01T00:00:00Z\"}\n",
        "{\"member\": \"C-2\", \"profile\": {\"name\": \"Bob, \\\"the\\\" Builder\"}, \"enrolled_at\": \"2026-02-01T00:00:00Z\"}\n",
        "{\"member\": \"C-3\", \"profile\": {\"name\": \"Cy\", \"birthday\": \"12/01/1990\"}}\n",
    );
    let out = env.run(&[
        "members",
        "import",
        "--program",
        "shop",
        path(&env.file("m.ndjson", members)),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("YYYY-MM-DD"),
        "{stderr}"
    );
    env.ok(&["journals", "import", "--program", "shop", path(&env.file("j.ndjson",
        "{\"external_id\": \"p1\", \"member\": \"C-1\", \"type\": \"purchase\", \"occurred_at\": \"2026-11-30T10:00:00Z\", \"amount\": \"12\", \"currency\": \"EUR\"}\n"))]);

    let table = env.ok(&[
        "members",
        "list",
        "--program",
        "shop",
        "--search",
        "ann smi",
    ]);
    assert!(
        table.contains("C-1") && table.contains("Ann Smith") && !table.contains("C-2"),
        "{table}"
    );
    assert!(table.contains("points 12"), "{table}");
    let csv = env.ok(&[
        "members",
        "list",
        "--program",
        "shop",
        "--format",
        "csv",
        "--sort",
        "-enrolled_at",
    ]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "member",
            "status",
            "name",
            "email",
            "phone",
            "birthday",
            "enrolled_at",
            "tiers",
            "points_available",
            "points_pending"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a CSV row")).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    // Newest enrolment first; a name with a comma and quotes survives the round trip.
    assert_eq!(&rows[0][0], "C-2");
    assert_eq!(&rows[0][2], "Bob, \"the\" Builder");
    assert_eq!(&rows[1][0], "C-1");
    assert_eq!(&rows[1][4], "+44 20 7946");
    assert_eq!(&rows[1][8], "12");
    // --limit stops early; a filter that matches nothing lists nothing.
    let one = env.ok(&[
        "members",
        "list",
        "--program",
        "shop",
        "--format",
        "ndjson",
        "--limit",
        "1",
    ]);
    assert_eq!(one.lines().count(), 1, "{one}");
    let none = env.ok(&[
        "members",
        "list",
        "--program",
        "shop",
        "--format",
        "ndjson",
        "--balance-min",
        "13",
    ]);
    assert!(none.is_empty(), "{none}");
    let out = env.run(&["members", "list", "--program", "shop", "--tier", "gold"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no tier"),
        "{out:?}"
    );

    // A member's data: exported as JSON, then erased (confirmed by repeating the id).
    let export = env.ok(&["members", "export", "--program", "shop", "C-1"]);
    let export: serde_json::Value = serde_json::from_str(&export).expect("JSON");
    assert_eq!(
        export["tables"]["members"][0]["profile"]["email"],
        "ann@example.com"
    );
    assert_eq!(
        export["tables"]["journals"].as_array().map(Vec::len),
        Some(1)
    );
    let out = env.run(&[
        "members",
        "erase",
        "--program",
        "shop",
        "C-1",
        "--confirm",
        "C-2",
    ]);
    assert!(!out.status.success(), "{out:?}");
    let erased = env.ok(&[
        "members",
        "erase",
        "--program",
        "shop",
        "C-1",
        "--confirm",
        "C-1",
    ]);
    assert!(erased.contains("as erased-"), "{erased}");
    let list = env.ok(&["members", "list", "--program", "shop", "--format", "csv"]);
    assert!(
        !list.contains("Ann") && !list.contains("C-1") && list.contains("erased-"),
        "{list}"
    );
}

/// Kills the import with SIGKILL twice while it runs, then lets it finish: every journal
/// is applied exactly once, and the balances are what one clean import gives.
fn an_import_killed_midway_resumes_and_applies_every_journal_once(env: &Env) {
    killed_midway(env, &[], false);
}

/// The same, grouped by member: the checkpoints are positions in the sorted order, which
/// the restarts find again.
fn an_import_by_member_killed_midway_resumes_and_applies_every_journal_once(env: &Env) {
    killed_midway(env, &["--order", "member"], false);
}

/// Grouped by member, a merge between a kill and the restart moves the merged member's
/// lines in the order (they sort with the survivor's): the restart starts afresh instead
/// of resuming at a position that now means other lines, and nothing is lost.
fn an_import_by_member_after_a_merge_starts_afresh_and_loses_nothing(env: &Env) {
    killed_midway(env, &["--order", "member"], true);
}

/// Kills the import (`merge`: once, then merges M0 into M1), then lets it finish.
fn killed_midway(env: &Env, order: &[&str], merge: bool) {
    env.ok(&["program", "apply", path(&env.file("shop.yaml", SHOP))]);
    let members: String = (0..200)
        .map(|m| format!("{{\"member\": \"M{m}\", \"enrolled_at\": \"2026-01-01T00:00:00Z\"}}\n"))
        .collect();
    env.ok(&[
        "members",
        "import",
        "--program",
        "shop",
        path(&env.file("members.ndjson", &members)),
    ]);
    let count = 30_000;
    let mut expected_points = 0;
    let journals: String = (0..count)
        .map(|i| {
            let cents = 100 + (i * 37) % 9_000;
            expected_points += cents / 100;
            format!(
                "{{\"external_id\": \"j{i}\", \"member\": \"M{}\", \"type\": \"purchase\", \"occurred_at\": \"2026-11-20T10:00:00Z\", \"amount\": \"{}.{:02}\", \"currency\": \"EUR\"}}\n",
                i % 200,
                cents / 100,
                cents % 100
            )
        })
        .collect();
    let file = env.file("journals.ndjson", &journals);
    let (runtime, store) = env.store();
    let program = runtime.block_on(store.require_program("shop")).unwrap();
    let applied = || runtime.block_on(store.journal_count(&program)).unwrap();
    let args = [
        &[
            "journals",
            "import",
            "--program",
            "shop",
            path(&file),
            "--batch-size",
            "400",
        ],
        order,
    ]
    .concat();
    let mut previous = 0;
    for kill in 1..=(if merge { 1 } else { 2 }) {
        let mut child = env
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until this run has committed more, then kill it without warning.
        let deadline = Instant::now() + Duration::from_secs(120);
        while applied() < previous + 2_000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let now = applied();
        assert!(
            now > previous && now < count,
            "kill {kill}: {now} journals committed, expected mid-way"
        );
        previous = now;
    }
    if merge {
        let agent = fidelis_store::Actor {
            name: "dana".into(),
            role: "agent".into(),
        };
        runtime
            .block_on(store.merge_members(&program, "M0", "M1", chrono::Utc::now(), &agent))
            .unwrap();
    }
    let out = env.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let totals = runtime.block_on(store.program_totals(&program)).unwrap();
    assert_eq!(totals, vec![("points".to_owned(), expected_points, 0)]);
    if merge {
        assert!(!stderr.contains("resuming"), "{stderr}");
        // Every line once: those the killed run committed come back as replays.
        assert!(
            stdout.contains(&format!(
                ": {} applied, {previous} already applied, 0 rejected",
                count - previous
            )),
            "{stdout}"
        );
        return;
    }
    assert!(stderr.contains("resuming the import"), "{stderr}");
    assert_eq!(
        stderr.contains("(by member)"),
        order.contains(&"member"),
        "{stderr}"
    );
    assert_eq!(applied(), count, "every journal once");
    assert!(stdout.contains(&format!("{count} applied")), "{stdout}");
}

/// Grouped by member, an import applies and refuses exactly what file order does: each
/// member's journals keep their order (a redemption still finds the points earned before
/// it, a refund its purchase), and rejected lines keep their line numbers — for NDJSON and
/// CSV alike.
fn an_import_by_member_gives_what_file_order_gives(env: &Env) {
    let members: String = ["A", "B", "C", "D", "E"]
        .iter()
        .map(|m| format!("{{\"member\": \"{m}\", \"enrolled_at\": \"2026-01-01T00:00:00Z\"}}\n"))
        .collect();
    let members = env.file("members.ndjson", &members);
    for code in ["file", "member", "csv", "csvfile"] {
        shop_with_members(env, code, &members);
    }
    // D is merged into E: D's journals post to E's ledger, so they keep their order with
    // E's (E's hash sorts before D's: sorted by its own member, D's purchase would come
    // after E's redemption).
    let (runtime, store) = env.store();
    let agent = fidelis_store::Actor {
        name: "dana".into(),
        role: "agent".into(),
    };
    for code in ["file", "member"] {
        let program = runtime.block_on(store.require_program(code)).unwrap();
        runtime
            .block_on(store.merge_members(&program, "D", "E", chrono::Utc::now(), &agent))
            .unwrap();
    }
    let j = |id: &str, member: &str, kind: &str, rest: &str| {
        format!(
            r#"{{"external_id": "{id}", "member": "{member}", "type": "{kind}", "occurred_at": "2026-11-02T10:00:00Z", {rest}}}"#
        )
    };
    let lines = [
        j(
            "p1",
            "A",
            "purchase",
            r#""amount": "100", "currency": "EUR""#,
        ),
        j(
            "q1",
            "B",
            "purchase",
            r#""amount": "50", "currency": "EUR""#,
        ),
        j(
            "r1",
            "A",
            "redemption",
            r#""currency": "points", "points": 60"#,
        ),
        "not JSON".to_owned(),
        j(
            "q2",
            "B",
            "redemption",
            r#""currency": "points", "points": 80"#,
        ),
        String::new(),
        j(
            "c1",
            "C",
            "purchase",
            r#""amount": "30", "currency": "EUR""#,
        ),
        j(
            "f1",
            "A",
            "refund",
            r#""amount": "20", "currency": "EUR", "original_external_id": "p1""#,
        ),
        j(
            "q3",
            "B",
            "purchase",
            r#""amount": "40", "currency": "EUR""#,
        ),
        j(
            "r2",
            "A",
            "redemption",
            r#""currency": "points", "points": 30"#,
        ),
        j("z1", "Z", "purchase", r#""amount": "5", "currency": "EUR""#),
        j(
            "d1",
            "D",
            "purchase",
            r#""amount": "100", "currency": "EUR""#,
        ),
        j(
            "e1",
            "E",
            "redemption",
            r#""currency": "points", "points": 80"#,
        ),
    ];
    let file = env.file("journals.ndjson", &(lines.join("\n") + "\n"));
    let import = |code: &str, file: &Path, order: &str| {
        let report = env.dir.path().join(format!("{code}.rejected.ndjson"));
        let out = env.run(&[
            "journals",
            "import",
            "--program",
            code,
            path(file),
            "--order",
            order,
            "--report",
            path(&report),
        ]);
        assert_eq!(out.status.code(), Some(3), "some lines were rejected");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let counts = stdout[stdout.find(':').unwrap()..stdout.find(" (").unwrap()].to_owned();
        let rejected = rejected_lines(&report);
        (counts, rejected, balances(env, code, &["A", "B", "C", "E"]))
    };
    let in_file_order = import("file", &file, "file");
    assert_eq!(
        in_file_order,
        (
            ": 8 applied, 0 already applied, 4 rejected".to_owned(),
            vec![
                (4, "invalid_json".to_owned()),
                (5, "insufficient_points".to_owned()),
                (10, "insufficient_points".to_owned()),
                (11, "unknown_member".to_owned()),
            ],
            vec![20, 90, 30, 20],
        ),
        "A: 100 - 60 - 20 refunded; B: 50 + 40 (80 refused before the 40 came); C: 30; \
         E: D's 100 - 80"
    );
    assert_eq!(import("member", &file, "member"), in_file_order);

    // Blank lines before the header; a quote inside a field (an ordinary character); a
    // quote left open (that line alone refused, also on a last line without its line
    // break); blank lines of every kind; a line that is not UTF-8 after the open quote
    // (refused alone: nothing after it is lost).
    let mut csv: Vec<u8> = b"\n\
        \"\"\n\
        external_id,member,type,occurred_at,amount,currency,points,original_external_id,attributes.note\n\
        p1,A,purchase,2026-11-02T10:00:00Z,100,EUR,,,\n\
        q1,B,purchase,2026-11-02T10:00:00Z,50,EUR,,,\n\
        r1,A,redemption,2026-11-02T10:00:00Z,,points,60,,\n\
        x1,\"B,purchase,2026-11-02T10:00:00Z,1,EUR,,,\n\
        q2,B,redemption,2026-11-02T10:00:00Z,,points,80,,\n\
        c1,C,purchase,2026-11-02T10:00:00Z,30,EUR,,,\n\
        f1,A,refund,2026-11-02T10:00:00Z,20,EUR,,p1,\n\
        q3,B,purchase,2026-11-02T10:00:00Z,40,EUR,,,15\" screen\n\
        r2,A,redemption,2026-11-02T10:00:00Z,,points,30,,\n\
        \n\
        \x20 \r\n\
        \"\"\n\
        l1,C,purchase,2026-11-02T10:00:00Z,5,EUR,,,caf"
        .to_vec();
    csv.extend_from_slice(b"\xe9\n");
    csv.extend_from_slice(b"c2,C,purchase,2026-11-02T10:00:00Z,5,EUR,,,\r\n");
    csv.extend_from_slice(b"c3,C,purchase,2026-11-02T10:00:00Z,5,EUR,,,\"open");
    let path_csv = env.dir.path().join("journals.csv");
    std::fs::write(&path_csv, &csv).unwrap();
    let csv = path_csv;
    let in_file_order = import("csvfile", &csv, "file");
    let (counts, rejected, balances) = import("csv", &csv, "member");
    assert_eq!(
        (counts.clone(), rejected.clone(), balances.clone()),
        in_file_order
    );
    assert_eq!(counts, ": 7 applied, 0 already applied, 5 rejected");
    assert_eq!(
        rejected,
        [
            (7, "invalid_csv".to_owned()),
            (8, "insufficient_points".to_owned()),
            (12, "insufficient_points".to_owned()),
            (16, "invalid_csv".to_owned()),
            (18, "invalid_csv".to_owned()),
        ]
    );
    assert_eq!(balances[..3], [20, 90, 35]);
}

/// Program `code` (the shop's definition) with the members of the `members` file.
fn shop_with_members(env: &Env, code: &str, members: &Path) {
    let yaml = SHOP.replace("code: shop", &format!("code: {code}"));
    env.ok(&[
        "program",
        "apply",
        path(&env.file(&format!("{code}.yaml"), &yaml)),
    ]);
    env.ok(&["members", "import", "--program", code, path(members)]);
}

/// The (line, code) of each line in an import's report of rejected lines.
fn rejected_lines(report: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(report)
        .unwrap()
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["line"].as_i64().unwrap(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The points available to each member on 2026-11-06 (0 for a member without any).
fn balances(env: &Env, code: &str, members: &[&str]) -> Vec<i64> {
    members
        .iter()
        .map(|m| {
            let b = env.ok(&[
                "balance",
                "--program",
                code,
                m,
                "--as-of",
                "2026-11-06T00:00:00Z",
                "--json",
            ]);
            let b: serde_json::Value = serde_json::from_str(&b).unwrap();
            b["balances"][0]["available"].as_i64().unwrap_or(0)
        })
        .collect()
}

/// Numbers below `n`, a fixed sequence per seed (xorshift64*: no dependency).
fn numbers(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Generated files (purchases, redemptions that may overdraw, refunds of earlier
/// purchases, repeated external ids, bad lines, an unknown member, a merged member) give
/// the same counts, the same rejected lines and the same balances in file order and by
/// member, with small batches over two writers so that batch and partition boundaries
/// fall everywhere.
fn random_files_import_alike_in_either_order(env: &Env) {
    let (runtime, store) = env.store();
    let agent = fidelis_store::Actor {
        name: "dana".into(),
        role: "agent".into(),
    };
    let members: String = (0..6)
        .map(|m| format!("{{\"member\": \"M{m}\", \"enrolled_at\": \"2026-01-01T00:00:00Z\"}}\n"))
        .collect();
    let members = env.file("members.ndjson", &members);
    let mut next = numbers(0x9e37_79b9_7f4a_7c15);
    for case in 0..6 {
        let codes = [format!("r{case}f"), format!("r{case}m")];
        for code in &codes {
            shop_with_members(env, code, &members);
            if case % 2 == 1 {
                let program = runtime.block_on(store.require_program(code)).unwrap();
                runtime
                    .block_on(store.merge_members(&program, "M5", "M4", chrono::Utc::now(), &agent))
                    .unwrap();
            }
        }
        let mut lines = Vec::new();
        let mut purchases: Vec<(String, String, u64)> = Vec::new();
        let mut earlier: Vec<String> = Vec::new();
        for i in 0..80 {
            let member = format!("M{}", next(7));
            let roll = next(100);
            let line = if roll < 4 {
                "{not json".to_owned()
            } else if roll < 8 && !earlier.is_empty() {
                // The same line again: replayed, whatever the order.
                earlier[next(earlier.len() as u64) as usize].clone()
            } else if roll < 20 && !purchases.is_empty() {
                let (id, owner, amount) = purchases[next(purchases.len() as u64) as usize].clone();
                format!(
                    r#"{{"external_id": "f{i}", "member": "{owner}", "type": "refund", "occurred_at": "2026-11-02T10:00:00Z", "amount": "{}", "currency": "EUR", "original_external_id": "{id}"}}"#,
                    1 + next(amount)
                )
            } else if roll < 45 {
                format!(
                    r#"{{"external_id": "r{i}", "member": "{member}", "type": "redemption", "occurred_at": "2026-11-02T10:00:00Z", "currency": "points", "points": {}}}"#,
                    1 + next(80)
                )
            } else {
                let amount = 1 + next(100);
                purchases.push((format!("p{i}"), member.clone(), amount));
                format!(
                    r#"{{"external_id": "p{i}", "member": "{member}", "type": "purchase", "occurred_at": "2026-11-02T10:00:00Z", "amount": "{amount}", "currency": "EUR"}}"#
                )
            };
            if line.starts_with('{') && !line.starts_with("{not") {
                earlier.push(line.clone());
            }
            lines.push(line);
        }
        let file = env.file(&format!("case{case}.ndjson"), &(lines.join("\n") + "\n"));
        let outcome = |code: &str, args: &[&str]| {
            let report = env.dir.path().join(format!("{code}.rejected.ndjson"));
            let out = env.run(
                &[
                    &[
                        "journals",
                        "import",
                        "--program",
                        code,
                        path(&file),
                        "--report",
                        path(&report),
                    ],
                    args,
                ]
                .concat(),
            );
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                matches!(out.status.code(), Some(0 | 3)),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let counts = stdout[stdout.find(':').unwrap()..stdout.find(" (").unwrap()].to_owned();
            let survivors: &[&str] = if case % 2 == 1 {
                &["M0", "M1", "M2", "M3", "M4"]
            } else {
                &["M0", "M1", "M2", "M3", "M4", "M5"]
            };
            let rejected = if report.exists() {
                rejected_lines(&report)
            } else {
                Vec::new()
            };
            (counts, rejected, balances(env, code, survivors))
        };
        let in_file_order = outcome(&codes[0], &["--batch-size", "4", "--workers", "2"]);
        let by_member = outcome(
            &codes[1],
            &["--order", "member", "--batch-size", "3", "--workers", "2"],
        );
        assert_eq!(
            by_member,
            in_file_order,
            "case {case}:\n{}",
            lines.join("\n")
        );
        assert!(
            in_file_order.2.iter().any(|b| *b > 0) && !in_file_order.1.is_empty(),
            "case {case} earned and refused something: {in_file_order:?}"
        );
    }
}

/// One large batch leaves what small batches leave: the same counts, rejected lines and,
/// per member, balances and expiry dates. On SQLite a large batch writes the members it is
/// done with while it processes the rest (`LedgerTx::write_beside`); here members come and
/// go through the file, so most are done with long before its end, some are written while
/// others still spend and refund, and lines repeat those of members already written.
fn a_large_batch_leaves_what_small_batches_leave(env: &Env) {
    let members: String = (0..60)
        .map(|m| {
            format!("{{\"member\": \"M{m:02}\", \"enrolled_at\": \"2026-01-01T00:00:00Z\"}}\n")
        })
        .collect();
    let members = env.file("members.ndjson", &members);
    for code in ["large", "small"] {
        shop_with_members(env, code, &members);
    }
    let mut next = numbers(0x2545_f491_4f6c_dd1d);
    let today = chrono::Utc::now();
    let as_of = (today + chrono::Duration::days(1)).to_rfc3339();
    let mut lines = Vec::new();
    let mut purchases: Vec<(String, String, u64)> = Vec::new();
    let mut earlier: Vec<String> = Vec::new();
    for i in 0..1_200u64 {
        // A window of eight members moving through the file.
        let member = format!("M{:02}", (i / 20 + next(8)) % 60);
        // Within the last three weeks: no point has expired yet (a month, to the month's
        // end), and the buckets' expiry dates differ when the weeks span a month's end.
        let day = (today - chrono::Duration::days(1 + next(20) as i64)).format("%Y-%m-%d");
        let roll = next(100);
        let line = if roll < 3 {
            "{not json".to_owned()
        } else if roll < 8 && !earlier.is_empty() {
            earlier[next(earlier.len() as u64) as usize].clone()
        } else if roll < 20 && !purchases.is_empty() {
            // Mostly a purchase of the window's, now and then an old one (or another
            // member's: refused alike).
            let pick = if next(4) == 0 {
                next(purchases.len() as u64) as usize
            } else {
                purchases.len() - 1 - next(purchases.len().min(10) as u64) as usize
            };
            let (id, owner, amount) = purchases[pick].clone();
            let owner = if next(10) == 0 { member.clone() } else { owner };
            format!(
                r#"{{"external_id": "f{i}", "member": "{owner}", "type": "refund", "occurred_at": "{day}T12:00:00Z", "amount": "{}", "currency": "EUR", "original_external_id": "{id}"}}"#,
                1 + next(amount)
            )
        } else if roll < 40 {
            format!(
                r#"{{"external_id": "r{i}", "member": "{member}", "type": "redemption", "occurred_at": "{day}T12:00:00Z", "currency": "points", "points": {}}}"#,
                1 + next(120)
            )
        } else {
            let amount = 1 + next(100);
            purchases.push((format!("p{i}"), member.clone(), amount));
            format!(
                r#"{{"external_id": "p{i}", "member": "{member}", "type": "purchase", "occurred_at": "{day}T10:00:00Z", "amount": "{amount}", "currency": "EUR"}}"#
            )
        };
        if line.starts_with("{\"") {
            earlier.push(line.clone());
        }
        lines.push(line);
    }
    let file = env.file("journals.ndjson", &(lines.join("\n") + "\n"));
    let outcome = |code: &str, batch: &str| {
        let report = env.dir.path().join(format!("{code}.rejected.ndjson"));
        let out = env.run(&[
            "journals",
            "import",
            "--program",
            code,
            path(&file),
            "--report",
            path(&report),
            "--batch-size",
            batch,
            // One writer: a refund naming another member's purchase is refused alike
            // (with several, the purchase may sit in another writer's batch, not yet
            // committed: `unknown_original` instead of `original_member_mismatch`).
            "--workers",
            "1",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let counts = stdout[stdout.find(':').unwrap()..stdout.find(" (").unwrap()].to_owned();
        let ledgers: Vec<serde_json::Value> = (0..60)
            .map(|m| {
                let b = env.ok(&[
                    "balance",
                    "--program",
                    code,
                    &format!("M{m:02}"),
                    "--as-of",
                    &as_of,
                    "--all",
                    "--json",
                ]);
                serde_json::from_str(&b).unwrap()
            })
            .collect();
        (counts, rejected_lines(&report), ledgers)
    };
    let large = outcome("large", "1200");
    let small = outcome("small", "7");
    assert_eq!(large.0, small.0, "counts");
    assert_eq!(large.1, small.1, "rejected lines");
    for (m, (l, s)) in large.2.iter().zip(&small.2).enumerate() {
        assert_eq!(l, s, "member M{m:02}");
    }
    let earned = large
        .2
        .iter()
        .filter(|b| b["balances"][0]["available"].as_i64() > Some(0))
        .count();
    assert!(
        earned > 40 && large.1.len() > 50,
        "{earned} members earned; {:?}",
        large.1.len()
    );
}

/// Where members' journals meet — a promotion budget shared by all, a household — the
/// order between members changes outcomes, so grouping by member is refused before
/// anything is imported.
fn an_import_by_member_is_refused_where_members_meet(env: &Env) {
    let budget = format!(
        "{SHOP}promotions:\n  - code: launch\n    name: Launch bonus\n    status: active\n    \
         limits: {{budget_points: 100}}\n    actions: [{{type: per_money, currency: points, rate: \"1\"}}]\n"
    );
    env.ok(&["program", "apply", path(&env.file("shop.yaml", &budget))]);
    env.ok(&["members", "enroll", "--program", "shop", "A"]);
    let file = env.file(
        "journals.ndjson",
        r#"{"external_id": "p1", "member": "A", "type": "purchase", "occurred_at": "2026-11-02T10:00:00Z", "amount": "10", "currency": "EUR"}
"#,
    );
    let import = |code: &str| {
        env.run(&[
            "journals",
            "import",
            "--program",
            code,
            path(&file),
            "--order",
            "member",
        ])
    };
    let out = import("shop");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--order member is refused") && stderr.contains("\"launch\""),
        "{stderr}"
    );
    let (runtime, store) = env.store();
    let program = runtime.block_on(store.require_program("shop")).unwrap();
    assert_eq!(runtime.block_on(store.journal_count(&program)).unwrap(), 0);

    // Without the shared budget, a household refuses it too.
    let plain = SHOP.replace("code: shop", "code: plain");
    env.ok(&["program", "apply", path(&env.file("plain.yaml", &plain))]);
    env.ok(&["members", "enroll", "--program", "plain", "A"]);
    let program = runtime.block_on(store.require_program("plain")).unwrap();
    let agent = fidelis_store::Actor {
        name: "dana".into(),
        role: "agent".into(),
    };
    runtime
        .block_on(store.create_group(
            &program,
            &fidelis_core::ids::ExternalId::parse("home").unwrap(),
            "Home",
            50,
            fidelis_store::RedeemRule::Owner,
            "A",
            chrono::Utc::now(),
            &agent,
        ))
        .unwrap();
    let out = import("plain");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("households"), "{stderr}");
    assert_eq!(runtime.block_on(store.journal_count(&program)).unwrap(), 0);
    // In file order the same file imports.
    let out = env.ok(&["journals", "import", "--program", "plain", path(&file)]);
    assert!(out.contains("1 applied"), "{out}");

    // A partner whose prepaid pack refuses accruals once empty is shared by all members.
    let packed = SHOP.replace("code: shop", "code: packed");
    env.ok(&["program", "apply", path(&env.file("packed.yaml", &packed))]);
    env.ok(&["members", "enroll", "--program", "packed", "A"]);
    let program = runtime.block_on(store.require_program("packed")).unwrap();
    let cars: fidelis_core::partners::PartnerDocument = serde_json::from_value(serde_json::json!(
        {"name": "Car rental", "roles": "earn", "billing": "prepaid", "cost_per_point": "0.008"}
    ))
    .unwrap();
    let manager = fidelis_store::Actor {
        name: "fay".into(),
        role: "program_manager".into(),
    };
    runtime
        .block_on(store.put_partner(&program, "cars", &cars, chrono::Utc::now(), &manager))
        .unwrap();
    let out = import("packed");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("partner \"cars\" refuses accruals"),
        "{stderr}"
    );
    assert_eq!(runtime.block_on(store.journal_count(&program)).unwrap(), 0);
}

/// A bulk run gives each listed member a voucher of the template's definition, writes the
/// codes out, and run again issues nothing more; an unknown definition changes nothing.
fn vouchers_are_issued_in_bulk_and_their_codes_written_out(env: &Env) {
    env.ok(&["program", "create", "retail", "--template", "retail"]);
    let list: String = (0..1200).map(|m| format!("C-{m}\n")).collect();
    let members: String = (0..1200)
        .map(|m| format!("{{\"member\": \"C-{m}\"}}\n"))
        .collect();
    env.ok(&[
        "members",
        "import",
        "--program",
        "retail",
        path(&env.file("members.ndjson", &members)),
    ]);
    let list = env.file("list.txt", &list);
    let codes = env.dir.path().join("codes.csv");
    let args = [
        "vouchers",
        "issue",
        "--program",
        "retail",
        "--definition",
        "ten-euros",
        "--members",
        path(&list),
        "--run",
        "winter",
        "--codes",
        path(&codes),
    ];
    let out = env.run(&args);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1200 voucher(s) issued now"), "{stdout}");
    // Progress after each round of 500.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("500/1200") && stderr.contains("1200/1200"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&codes).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines[0], "member,code");
    assert_eq!(lines.len(), 1201);
    assert_eq!(lines[1].split(',').next(), Some("C-0"));
    let unique: std::collections::HashSet<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(unique.len(), 1200);
    assert!(
        unique
            .iter()
            .all(|c| c.starts_with("SHOP-") && c.len() == 17),
        "{lines:?}"
    );
    // The same run again: nothing new, the same codes.
    let again = env.ok(&args);
    assert!(
        again.contains("0 voucher(s) issued now, 1200 already"),
        "{again}"
    );
    assert_eq!(std::fs::read_to_string(&codes).unwrap(), written);
    // Each member holds a €10 voucher, readable by its code.
    let (rt, store) = env.store();
    let program = rt.block_on(store.program("retail")).unwrap().unwrap();
    let code = lines[7].split(',').nth(1).unwrap();
    let voucher = rt
        .block_on(store.voucher(&program, code, chrono::Utc::now()))
        .unwrap()
        .unwrap();
    assert_eq!(voucher.member.as_deref(), Some("C-6"));
    assert_eq!((voucher.status, voucher.remaining), ("issued", Some(1000)));
    // Unknown definition or member: refused, nothing issued.
    let bad = env.run(&[
        "vouchers",
        "issue",
        "--program",
        "retail",
        "--definition",
        "nope",
        "--count",
        "3",
        "--run",
        "x",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nope"),
        "{bad:?}"
    );
    let unknown = env.file("unknown.txt", "C-1\nC-9999\n");
    let bad = env.run(&[
        "vouchers",
        "issue",
        "--program",
        "retail",
        "--definition",
        "ten-euros",
        "--members",
        path(&unknown),
        "--run",
        "y",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("C-9999"),
        "{bad:?}"
    );
    assert!(
        rt.block_on(store.bulk_run_codes(&program, "y"))
            .unwrap()
            .is_empty()
    );
}

/// Catalog items come from NDJSON: good lines are written, bad ones reported by number and
/// reason (exit 3), and the list shows price and stock.
fn the_catalog_is_imported_line_by_line(env: &Env) {
    env.ok(&["program", "create", "retail", "--template", "retail"]);
    let file = env.file(
        "catalog.ndjson",
        concat!(
            r#"{"code": "mug", "name": "Mug", "currency": "points", "points": 500, "stock": 20}"#, "\n",
            r#"{"code": "gift-card", "name": "€10 gift card", "currency": "points", "points": 1000, "voucher": "ten-euros", "tier_prices": [{"tier": "gold", "points": 800}]}"#, "\n",
            "\n",
            r#"{"code": "bad", "name": "Bad", "currency": "miles", "points": 5}"#, "\n",
            r#"{"code": "worse", "name": "Worse", "currency": "points", "points": 5, "colour": "red"}"#, "\n",
            "not json\n",
        ),
    );
    let out = env.run(&["catalog", "import", "--program", "retail", path(&file)]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 item(s) written, 3 line(s) rejected"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 4: currency: the program has no currency \"miles\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5:") && stderr.contains("colour"),
        "{stderr}"
    );
    assert!(stderr.contains("line 6:"), "{stderr}");
    let list = env.ok(&["catalog", "list", "--program", "retail"]);
    let mug = list
        .lines()
        .find(|l| l.starts_with("mug "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(mug.contains("500") && mug.contains("20"), "{mug}");
    assert!(
        list.contains("gift-card") && !list.contains("bad"),
        "{list}"
    );
}

/// A partner's settlement statement from the command line: as CSV, closed, and a period
/// out of order refused with its code.
fn a_partner_statement_is_printed_and_closed(env: &Env) {
    env.ok(&["program", "create", "retail", "--template", "retail"]);
    let (rt, store) = env.store();
    rt.block_on(async {
        let now = chrono::Utc::now();
        let program = store.require_program("retail").await.unwrap();
        store
            .enroll(
                &program,
                &fidelis_store::Enrollment {
                    external_id: fidelis_core::ids::ExternalId::parse("C-1").unwrap(),
                    profile: serde_json::json!({}),
                    enrolled_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                },
                now,
            )
            .await
            .unwrap();
        let partner: fidelis_core::partners::PartnerDocument = serde_json::from_value(
            serde_json::json!({"name": "Bank card", "roles": "earn", "billing": "postpaid", "cost_per_point": "0.01"}),
        )
        .unwrap();
        store
            .put_partner(&program, "bank", &partner, now, &fidelis_store::Actor::cli())
            .await
            .unwrap();
        let doc: fidelis_core::journal::JournalDocument = serde_json::from_value(serde_json::json!({
            "external_id": "b1", "member": "C-1", "type": "purchase", "occurred_at": "2026-05-10T10:00:00Z",
            "amount": "120", "currency": "EUR", "partner": "bank"}))
        .unwrap();
        let journal = fidelis_core::journal::Journal::parse(&doc, &program.program).unwrap();
        store
            .post_realtime(
                &program,
                fidelis_store::Prepared::new(journal, &program.program).unwrap(),
                now,
            )
            .await
            .unwrap()
            .unwrap();
    });
    let period = [
        "settlement",
        "--program",
        "retail",
        "--partner",
        "bank",
        "--from",
        "2026-05-01T00:00:00Z",
        "--to",
        "2026-06-01T00:00:00Z",
    ];
    let csv = env.ok(&[&period[..], &["--format", "csv"]].concat());
    assert!(
        csv.starts_with("section,kind,entries,points,pack,amount\n"),
        "{csv}"
    );
    assert!(csv.contains("\nperiod,accrual,1,"), "{csv}");
    // The liability: the points the member holds, the bank's share of them.
    let liability: serde_json::Value =
        serde_json::from_str(&env.ok(&["liability", "--program", "retail"])).unwrap();
    let held = liability["currencies"][0]["outstanding_points"]
        .as_i64()
        .unwrap();
    assert!(held >= 120, "{liability}");
    assert_eq!(liability["partners"][0]["partner"], "bank", "{liability}");
    assert_eq!(
        liability["partners"][0]["outstanding_points"].as_i64(),
        Some(held)
    );
    let before: serde_json::Value = serde_json::from_str(&env.ok(&[
        "liability",
        "--program",
        "retail",
        "--as-of",
        "2026-05-01T00:00:00Z",
    ]))
    .unwrap();
    assert_eq!(before["currencies"][0]["outstanding_points"], 0, "{before}");
    let closed: serde_json::Value =
        serde_json::from_str(&env.ok(&[&period[..], &["--close"]].concat())).unwrap();
    assert_eq!(closed["status"], "closed");
    assert!(
        closed["totals"]["points_issued"].as_i64().unwrap() >= 120,
        "{closed}"
    );
    let out = env.run(&[
        "settlement",
        "--program",
        "retail",
        "--partner",
        "bank",
        "--from",
        "2026-07-01T00:00:00Z",
        "--to",
        "2026-08-01T00:00:00Z",
        "--close",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("period_not_next"),
        "{out:?}"
    );
}

/// The BG/NBD and Gamma-Gamma validation, through the operator's own path: the CDNOW 1/10
/// sample (2,357 customers, 6,919 purchases) enrolled and imported as purchase journals,
/// then `fidelis analytics churn` with the paper's calibration window (39 weeks ending
/// 1997-09-30) must find the published r = 0.243, α = 4.414, a = 0.793, b = 2.426 (1 %),
/// log-likelihood −9582.4 (±0.5), and p = 6.25, q = 3.74, γ = 15.44 for spend (1 %).
fn the_cdnow_sample_imported_as_journals_gives_the_published_models(env: &Env) {
    let program = r#"
code: cdnow
name: CDNOW
time_zone: UTC
money_currency: USD
currencies:
  - {code: points, name: Points, kind: redeemable, expiry: {policy: never}}
earning:
  base:
    - {currency: points, rate: "1"}
"#;
    env.ok(&["program", "apply", path(&env.file("cdnow.yaml", program))]);
    let sample = include_str!("../../fidelis-core/tests/data/cdnow/CDNOW_sample.txt");
    let mut members = std::collections::BTreeSet::new();
    let mut journals = String::from("external_id,member,type,occurred_at,amount,currency\n");
    for (n, line) in sample.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (customer, day, dollars) = (f[0], f[2], f[4]);
        members.insert(customer.to_owned());
        journals.push_str(&format!(
            "cd-{n},{customer},purchase,{}-{}-{}T12:00:00Z,{dollars},USD\n",
            &day[..4],
            &day[4..6],
            &day[6..]
        ));
    }
    let enrolments: String = members
        .iter()
        .map(|m| {
            format!(
                "{}\n",
                serde_json::json!({"member": m, "enrolled_at": "1997-01-01T00:00:00Z"})
            )
        })
        .collect();
    let out = env.ok(&[
        "members",
        "import",
        "--program",
        "cdnow",
        path(&env.file("members.ndjson", &enrolments)),
    ]);
    assert!(out.contains("2357 member(s) enrolled"), "{out}");
    let out = env.ok(&[
        "journals",
        "import",
        "--program",
        "cdnow",
        path(&env.file("purchases.csv", &journals)),
    ]);
    assert!(
        out.contains("6919 applied, 0 already applied, 0 rejected"),
        "{out}"
    );

    let scores = env.dir.path().join("scores.csv");
    let report = env.ok(&[
        "analytics",
        "churn",
        "--program",
        "cdnow",
        "--calibration-end",
        "1997-09-30",
        "--unit",
        "week",
        "--horizon",
        "39",
        "--members",
        path(&scores),
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["members"], 2357, "{report}");
    let close = |got: &serde_json::Value, published: f64| {
        let got = got.as_f64().unwrap();
        (got / published - 1.0).abs() < 0.01
    };
    let bg = &report["purchase_model"];
    for (name, published) in [("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)] {
        assert!(close(&bg[name], published), "{name}: {report}");
    }
    assert!(
        (bg["log_likelihood"].as_f64().unwrap() - -9582.4).abs() < 0.5,
        "{report}"
    );
    let gg = &report["spend_model"];
    for (name, published) in [("p", 6.25), ("q", 3.74), ("gamma", 15.44)] {
        assert!(close(&gg[name], published), "{name}: {report}");
    }
    // RFM: every member in one named segment, the extremes populated.
    let segments = report["rfm_segments"].as_object().unwrap();
    assert_eq!(
        segments.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        2357
    );
    assert!(
        segments["champions"].as_u64().unwrap() > 0
            && segments["hibernating"].as_u64().unwrap() > 0,
        "{report}"
    );
    // Every member scored once; the one who bought steadily is likelier alive than one
    // who bought once in January and never again within the window.
    let mut csv = csv::Reader::from_path(&scores).unwrap();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2357);
    let p_alive = |member: &str| -> f64 {
        rows.iter().find(|r| &r[0] == member).unwrap()[7]
            .parse()
            .unwrap()
    };
    // Customer 00004 bought 1997-01-01, 01-18 and 08-02 in the window; 00021 twice in
    // January only.
    assert!(
        p_alive("00004") > p_alive("00021"),
        "{} {}",
        p_alive("00004"),
        p_alive("00021")
    );
}

/// The demo's weekend bonus holds out a fifth of the members: none of them gets the bonus
/// (their outcome says `control`), and the promotion report counts both groups.
fn the_demo_holds_out_a_control_group_and_reports_its_weekend_bonus(env: &Env) {
    let (rt, store) = env.store();
    let now = chrono::Utc::now();
    rt.block_on(fidelis_web::demo::seed(&store, now))
        .unwrap()
        .expect("seeded");
    // Every outcome, read straight from the table.
    const OUTCOMES: &str = "SELECT m.external_id, j.outcome FROM journals j \
        JOIN members m ON m.id = j.member_id WHERE j.outcome IS NOT NULL";
    let rows: Vec<(String, String)> = rt.block_on(async {
        if env.database.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(&env.database).await.unwrap();
            sqlx::query_as(OUTCOMES).fetch_all(&pool).await.unwrap()
        } else {
            let pool = sqlx::PgPool::connect(&env.database).await.unwrap();
            sqlx::query_as(OUTCOMES).fetch_all(&pool).await.unwrap()
        }
    });
    let (mut treated, mut control) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for (member, outcome) in rows {
        let outcome: serde_json::Value = serde_json::from_str(&outcome).unwrap();
        let results = outcome["promotions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for p in results.iter().filter(|p| p["promotion"] == "weekend") {
            if p["result"] == "control" {
                control.insert(member.clone());
                let awards = outcome["awards"].as_array().cloned().unwrap_or_default();
                assert!(
                    !awards.iter().any(|a| a["source"] == "weekend"),
                    "a held-out member got the bonus: {outcome}"
                );
            } else if p["result"] == "applied" {
                treated.insert(member.clone());
            }
        }
    }
    assert!(
        treated.is_disjoint(&control),
        "a member is in one group only"
    );
    let share = control.len() as f64 / (treated.len() + control.len()) as f64;
    assert!(
        (0.1..0.3).contains(&share),
        "{} treated, {} held out",
        treated.len(),
        control.len()
    );
    let from = (now - chrono::Duration::days(2_000)).to_rfc3339();
    let report = env.ok(&[
        "analytics",
        "promotion",
        "--program",
        "demo",
        "--promotion",
        "weekend",
        "--from",
        &from,
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["treated_members"], treated.len(), "{report}");
    assert_eq!(report["control_members"], control.len(), "{report}");
    let unknown = env.run(&[
        "analytics",
        "promotion",
        "--program",
        "demo",
        "--promotion",
        "nope",
        "--from",
        &from,
    ]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown_promotion"));

    // The key figures on the CLI, as the API gives them: the demo's 300 members, and a
    // CSV row per month and currency (points and status points).
    let kpis: serde_json::Value =
        serde_json::from_str(&env.ok(&["analytics", "kpis", "--program", "demo", "--months", "3"]))
            .unwrap();
    assert_eq!(kpis["members"], 300, "{kpis}");
    assert_eq!(kpis["months"].as_array().unwrap().len(), 3, "{kpis}");
    assert!(
        kpis["currencies"][0]["issued"].as_i64().unwrap() > 0,
        "{kpis}"
    );
    let csv = env.ok(&[
        "analytics",
        "kpis",
        "--program",
        "demo",
        "--months",
        "3",
        "--format",
        "csv",
    ]);
    assert!(
        csv.starts_with("month,currency,enrolments,issued,redeemed,expired\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 3 * 2, "{csv}");
}

/// The promotion report against numbers computed here from the raw spends: 80 members,
/// half held out; each treated purchase earns 100 bonus points worth €0.01 each.
fn a_promotion_report_matches_a_hand_computation(env: &Env) {
    let program = r#"
code: roi
name: ROI
time_zone: UTC
money_currency: EUR
currencies:
  - {code: points, name: Points, kind: redeemable, value_per_point: "0.01", expiry: {policy: never}}
earning:
  base:
    - {currency: points, rate: "1"}
promotions:
  - code: bonus
    name: Bonus
    status: active
    control_group: {share: "0.5"}
    actions: [{type: fixed, currency: points, points: 100}]
"#;
    env.ok(&["program", "apply", path(&env.file("roi.yaml", program))]);
    let members: String = (0..80)
        .map(|m| format!("{}\n", serde_json::json!({"member": format!("R{m:02}"), "enrolled_at": "2026-01-01T00:00:00Z"})))
        .collect();
    env.ok(&[
        "members",
        "import",
        "--program",
        "roi",
        path(&env.file("m.ndjson", &members)),
    ]);
    // Member m spends 20 + 5·(m mod 7) euros on 2026-03-02, and members with m divisible
    // by 3 another 12 on 2026-03-05; a purchase outside the window does not count.
    let mut csv = String::from("external_id,member,type,occurred_at,amount,currency\n");
    let mut spend = vec![0i64; 80];
    let mut journals = vec![1u32; 80];
    for m in 0..80usize {
        let euros = 20 + 5 * (m % 7) as i64;
        spend[m] += euros * 100;
        csv.push_str(&format!(
            "a{m},R{m:02},purchase,2026-03-02T10:00:00Z,{euros}.00,EUR\n"
        ));
        if m % 3 == 0 {
            spend[m] += 1200;
            journals[m] += 1;
            csv.push_str(&format!(
                "b{m},R{m:02},purchase,2026-03-05T10:00:00Z,12.00,EUR\n"
            ));
        }
        csv.push_str(&format!(
            "c{m},R{m:02},purchase,2026-05-01T10:00:00Z,99.00,EUR\n"
        ));
    }
    env.ok(&[
        "journals",
        "import",
        "--program",
        "roi",
        path(&env.file("p.csv", &csv)),
    ]);
    // Who was treated: their balance holds the bonus (base points are the euros spent).
    let list = env.ok(&["members", "list", "--program", "roi", "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(list.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (mut treated, mut control, mut bonus_journals) = (Vec::new(), Vec::new(), 0i64);
    for row in reader.records().map(Result::unwrap) {
        let m: usize = row[at("member")][1..].parse().unwrap();
        let balance: i64 = row[at("points_available")].parse().unwrap();
        let base = (spend[m] + 9_900) / 100;
        if balance == base {
            control.push(spend[m]);
        } else {
            assert_eq!(
                balance,
                base + 100 * (i64::from(journals[m]) + 1),
                "R{m:02}"
            );
            treated.push(spend[m]);
            bonus_journals += i64::from(journals[m]);
        }
    }
    assert!(
        treated.len() >= 30 && control.len() >= 30,
        "{} / {}",
        treated.len(),
        control.len()
    );
    let mean = |v: &[i64]| v.iter().sum::<i64>() as f64 / v.len() as f64;
    let var = |v: &[i64]| {
        let m = mean(v);
        v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    };
    let lift = mean(&treated) - mean(&control);
    let se = (var(&treated) / treated.len() as f64 + var(&control) / control.len() as f64).sqrt();
    let revenue = lift * treated.len() as f64;
    let cost = 100 * bonus_journals; // 100 points × €0.01, in cents
    let report = env.ok(&[
        "analytics",
        "promotion",
        "--program",
        "roi",
        "--promotion",
        "bonus",
        "--from",
        "2026-03-01T00:00:00Z",
        "--to",
        "2026-04-01T00:00:00Z",
    ]);
    let r: serde_json::Value = serde_json::from_str(&report).unwrap();
    let cents =
        |v: &serde_json::Value| (v.as_str().unwrap().parse::<f64>().unwrap() * 100.0).round();
    assert_eq!(r["treated_members"], treated.len(), "{r}");
    assert_eq!(r["control_members"], control.len(), "{r}");
    assert_eq!(cents(&r["lift_per_member"]), lift.round(), "{r}");
    assert_eq!(cents(&r["incremental_revenue"]), revenue.round(), "{r}");
    assert_eq!(cents(&r["cost"]), cost as f64, "{r}");
    let lo = cents(&r["lift_interval_95"][0]);
    assert!((lo - (lift - 1.959964 * se)).abs() <= 1.0, "{r}");
    let roi = r["roi"].as_f64().unwrap();
    assert!(
        (roi - (revenue - cost as f64) / cost as f64).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(r["points"][0]["points"], 100 * bonus_journals, "{r}");
}

/// `fidelis simulate` against the real thing: the journals a simulation of the retail
/// template generates, imported into a database, give the points issued, redeemed and
/// expired and the balances the simulation reported; the same seed gives the same report;
/// charts and CSV are written.
fn a_simulation_imported_into_a_database_gives_the_same_totals(env: &Env) {
    // Fourteen months ending at this month's start: nothing falls due between the end of the
    // simulation and now (24-month expiry; year ends and grace periods fall on month starts).
    let today = chrono::Utc::now().date_naive();
    let this_month = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&today),
        chrono::Datelike::month(&today),
        1,
    )
    .unwrap();
    let start = this_month - chrono::Months::new(14);
    let start_arg = start.format("%Y-%m").to_string();
    let (members_file, journals_file) = (
        env.dir.path().join("m.ndjson"),
        env.dir.path().join("j.ndjson"),
    );
    let simulate = |seed: &str| {
        env.ok(&[
            "simulate",
            "retail",
            "--members",
            "120",
            "--months",
            "14",
            "--start",
            &start_arg,
            "--seed",
            seed,
            "--format",
            "json",
            "--members-out",
            path(&members_file),
            "--journals-out",
            path(&journals_file),
            "--charts",
            path(&env.dir.path().join("charts")),
        ])
    };
    let first = simulate("9");
    assert_eq!(first, simulate("9"), "the same seed, the same run");
    let again = std::fs::read_to_string(&journals_file).unwrap();
    let report: serde_json::Value = serde_json::from_str(&first).unwrap();
    let run = &report["runs"][0];
    for chart in ["points.svg", "liability.svg", "tiers.svg"] {
        let svg = std::fs::read_to_string(env.dir.path().join("charts").join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
    }
    let sum = |field: &str, c: usize| -> i64 {
        run["months"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[field][c].as_i64().unwrap())
            .sum()
    };
    let currencies: Vec<String> = run["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let last = run["months"].as_array().unwrap().last().unwrap();

    env.ok(&["program", "create", "retail", "--template", "retail"]);
    env.ok(&[
        "members",
        "import",
        "--program",
        "retail",
        path(&members_file),
    ]);
    // Replayed as it happened: each journal at its own instant, as the simulation did
    // (imported today, the year-end reset of status points would come before last
    // December's journals).
    let out = env.ok(&[
        "journals",
        "import",
        "--program",
        "retail",
        "--replay",
        path(&journals_file),
    ]);
    let journals = std::fs::read_to_string(&journals_file)
        .unwrap()
        .lines()
        .count();
    assert!(
        out.contains(&format!(
            "{journals} applied, 0 already applied, 0 rejected"
        )),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&journals_file).unwrap(), again);
    env.ok(&["jobs", "run"]);
    let (rt, store) = env.store();
    let program = rt.block_on(store.require_program("retail")).unwrap();
    let now = chrono::Utc::now();
    let from = chrono::DateTime::<chrono::Utc>::from_naive_utc_and_offset(
        (start - chrono::Days::new(1)).and_time(chrono::NaiveTime::MIN),
        chrono::Utc,
    );
    let dashboard = rt
        .block_on(store.dashboard(&program, &[from, now], now))
        .unwrap();
    let totals = rt.block_on(store.program_totals(&program)).unwrap();
    for (c, code) in currencies.iter().enumerate() {
        let month = &dashboard.points.iter().find(|(k, _)| k == code).unwrap().1[0];
        assert_eq!(month.issued, sum("issued", c), "{code} issued");
        assert_eq!(month.redeemed, sum("redeemed", c), "{code} redeemed");
        assert_eq!(month.expired, sum("expired", c), "{code} expired");
        let held = totals
            .iter()
            .find(|t| &t.0 == code)
            .map_or(0, |t| t.1 + t.2);
        assert_eq!(
            held,
            last["outstanding"][c].as_i64().unwrap(),
            "{code} outstanding"
        );
    }
    assert!(sum("redeemed", 0) > 0 && sum("issued", 0) > 0, "{run}");
}

/// Seeds a small demo of `template` and sums every award in the journals' outcomes by
/// (source, currency); also counts vouchers promotions issued, and segment refreshes.
fn demo_awards(
    env: &Env,
    template: &str,
) -> (
    std::collections::BTreeMap<(String, String), i64>,
    usize,
    i64,
) {
    let (rt, store) = env.store();
    let report = rt
        .block_on(fidelis_web::demo::seed_template(
            &store,
            chrono::Utc::now(),
            template,
            40,
            6,
        ))
        .unwrap()
        .expect("seeded");
    assert!(report.journals > 100, "{template}: {report:?}");
    const OUTCOMES: &str = "SELECT outcome FROM journals WHERE outcome IS NOT NULL";
    const REFRESHES: &str = "SELECT COUNT(*) FROM segment_refreshes";
    let (rows, refreshes): (Vec<(String,)>, i64) = rt.block_on(async {
        if env.database.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(&env.database).await.unwrap();
            (
                sqlx::query_as(OUTCOMES).fetch_all(&pool).await.unwrap(),
                sqlx::query_scalar(REFRESHES)
                    .fetch_one(&pool)
                    .await
                    .unwrap(),
            )
        } else {
            let pool = sqlx::PgPool::connect(&env.database).await.unwrap();
            (
                sqlx::query_as(OUTCOMES).fetch_all(&pool).await.unwrap(),
                sqlx::query_scalar(REFRESHES)
                    .fetch_one(&pool)
                    .await
                    .unwrap(),
            )
        }
    });
    let mut sums = std::collections::BTreeMap::new();
    let mut vouchers = 0;
    for (outcome,) in rows {
        let outcome: serde_json::Value = serde_json::from_str(&outcome).unwrap();
        for a in outcome["awards"].as_array().cloned().unwrap_or_default() {
            *sums
                .entry((
                    a["source"].as_str().unwrap().to_owned(),
                    a["currency"].as_str().unwrap().to_owned(),
                ))
                .or_insert(0) += a["points"].as_i64().unwrap();
        }
        for p in outcome["promotions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            vouchers += p["rewards"]
                .as_array()
                .map_or(0, |r| r.iter().filter(|r| r["kind"] == "voucher").count());
        }
    }
    (sums, vouchers, refreshes)
}

fn awarded(
    sums: &std::collections::BTreeMap<(String, String), i64>,
    source: &str,
    currency: &str,
) -> i64 {
    sums.get(&(source.to_owned(), currency.to_owned()))
        .copied()
        .unwrap_or(0)
}

/// `serve --demo --template airline`: flights earn miles and status credits, business and
/// first double the miles, partners earn miles; the segments are refreshed by the jobs.
fn the_airline_demo_flies_cabins_and_partners(env: &Env) {
    let (sums, _, refreshes) = demo_awards(env, "airline");
    assert!(awarded(&sums, "base", "miles") > 0, "{sums:?}");
    assert!(awarded(&sums, "base", "credits") > 0, "{sums:?}");
    assert!(awarded(&sums, "premium-cabins", "miles") > 0, "{sums:?}");
    assert!(awarded(&sums, "partner-miles", "miles") > 0, "{sums:?}");
    // Five miles and one credit per euro of fare, each rounded down per flight.
    let (miles, credits) = (
        awarded(&sums, "base", "miles"),
        awarded(&sums, "base", "credits"),
    );
    assert!(
        5 * credits <= miles && miles < 5 * credits + 5 * credits / 100,
        "{miles} miles for {credits} credits"
    );
    assert!(refreshes >= 1, "the jobs refreshed the segments");
}

/// `serve --demo --template hotel`: a night is an elite night; suites earn per night.
fn the_hotel_demo_counts_elite_nights(env: &Env) {
    let (sums, _, _) = demo_awards(env, "hotel");
    assert!(awarded(&sums, "elite-nights", "nights") > 0, "{sums:?}");
    assert!(awarded(&sums, "suite-nights", "points") > 0, "{sums:?}");
    assert_eq!(
        awarded(&sums, "suite-nights", "points") % 500,
        0,
        "500 points per suite night"
    );
}

/// `serve --demo --template coffee`: regulars' ninth drinks issue free-drink vouchers.
fn the_coffee_demo_gives_the_tenth_drink(env: &Env) {
    let (sums, vouchers, _) = demo_awards(env, "coffee");
    assert!(awarded(&sums, "base", "stars") > 0, "{sums:?}");
    assert!(vouchers > 10, "{vouchers} free drinks");
}
