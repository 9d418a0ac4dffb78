//! `cargo xtask faults [--quick] [--release] [--databases sqlite,postgres]`: fault injection
//! under load, then an audit of every journal.
//!
//! Eight clients post purchases and redemptions for 30 members of a one-currency program
//! to a real `fidelis serve`, each journal under its own external id, retrying every
//! answer that is not final (a refused connection, a 5xx, a timeout) with the same body
//! until it is. Meanwhile the server is killed with SIGKILL and restarted; on SQLite (its
//! file on a small tmpfs) the disk is filled and freed; on PostgreSQL (a durable
//! throw-away server) the database is stopped with a fast shutdown and restarted, then
//! frozen with SIGSTOP and thawed. Afterwards every acknowledged journal must be stored,
//! every re-post must replay, and each member's ledger must hold each journal's points
//! once and sum to the balance. Prints sent, acknowledged, lost, doubled and mismatched,
//! and the status codes clients saw in each phase; fails on any loss, double, mismatch,
//! failed replay or unexpected conflict.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fidelis_testkit::{PgOptions, PgServer, Tmpfs};
use serde_json::{Value, json};

use crate::{ensure_postgres, root, run_cmd};

const TOKEN: &str = "faults-admin-token-0123456789";
const PROGRAM: &str = "faults";
const MEMBERS: usize = 30;
const CLIENTS: usize = 8;
/// The instant every journal claims: retries must send the same body.
const OCCURRED_AT: &str = "2026-06-01T12:00:00Z";

struct Plan {
    /// Load between faults, and after the last one.
    calm: Duration,
    kills: usize,
    disk_full: Duration,
    pg_stopped: Duration,
    pg_frozen: Duration,
}

impl Plan {
    fn quick() -> Self {
        Self {
            calm: Duration::from_secs(2),
            kills: 2,
            disk_full: Duration::from_secs(3),
            // Longer than the server's request timeout (5 s), so clients meet the timeout
            // and the fail-fast answers, not only slow ones.
            pg_stopped: Duration::from_secs(7),
            pg_frozen: Duration::from_secs(7),
        }
    }

    fn full() -> Self {
        Self {
            calm: Duration::from_secs(8),
            kills: 5,
            disk_full: Duration::from_secs(10),
            pg_stopped: Duration::from_secs(40),
            pg_frozen: Duration::from_secs(20),
        }
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut release = false;
    let mut databases = vec!["sqlite".to_owned(), "postgres".to_owned()];
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--release" => release = true,
            "--databases" => {
                let list = it.next().context("--databases needs a value")?;
                databases = list.split(',').map(str::to_owned).collect();
            }
            other => bail!("unknown option {other}"),
        }
    }
    let plan = if quick { Plan::quick() } else { Plan::full() };
    ensure_postgres()?;
    let mut build = Command::new("cargo");
    build.args(["build", "--quiet", "-p", "fidelis"]);
    if release {
        build.arg("--release");
    }
    run_cmd(&mut build)?;
    let bin = root().join(if release {
        "target/release/fidelis"
    } else {
        "target/debug/fidelis"
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut failures = Vec::new();
    for database in &databases {
        let report = match database.as_str() {
            "sqlite" => runtime.block_on(sqlite(&bin, &plan))?,
            "postgres" => runtime.block_on(postgres(&bin, &plan))?,
            other => bail!("unknown database {other} (sqlite or postgres)"),
        };
        report.print(database);
        if !report.clean() {
            failures.push(database.clone());
        }
    }
    ensure!(
        failures.is_empty(),
        "faults: journals lost, doubled or mismatched on {}",
        failures.join(", ")
    );
    Ok(())
}

/// A `fidelis serve` process that can be killed and started again on the same port.
struct Serve {
    bin: PathBuf,
    database: String,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Serve {
    async fn start(bin: &Path, database: &str, log: PathBuf) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut serve = Self {
            bin: bin.to_owned(),
            database: database.to_owned(),
            port,
            child: None,
            log,
        };
        serve.launch().await?;
        Ok(serve)
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(["--database", &self.database, "serve", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--request-timeout-secs", "5", "--rate-limit", "100000"])
            .env("FIDELIS_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting fidelis serve")?;
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("{}/readyz", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "fidelis serve did not become ready (log: {})",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, then start again.
    async fn kill_and_restart(&mut self) -> Result<()> {
        self.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.launch().await
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the clients saw, per phase, and the final answer of every journal.
#[derive(Default)]
struct Seen {
    phase: Mutex<String>,
    statuses: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    journals: Mutex<Vec<Sent>>,
}

impl Seen {
    fn enter(&self, phase: &str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.to_owned();
        eprintln!("faults: {phase}");
    }

    fn count(&self, label: String) {
        let phase = self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
        *self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(phase)
            .or_default()
            .entry(label)
            .or_default() += 1;
    }
}

struct Sent {
    external_id: String,
    member: usize,
    path: String,
    body: Value,
    /// The points it moves if applied.
    delta: i64,
    answer: Answer,
    /// Attempts before the final answer.
    retries: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Applied,
    /// The first final answer was a replay: an earlier attempt committed unanswered.
    Replayed,
    Refused(String),
    Conflict,
    /// No final answer before the clients gave up (the outcome is unknown).
    GaveUp,
}

async fn sqlite(bin: &Path, plan: &Plan) -> Result<Report> {
    let dir = root().join("target/faults");
    std::fs::create_dir_all(&dir)?;
    // Room for the whole run's database and WAL (up to 40 MB before a checkpoint) with
    // plenty to spare: the disk fills only when the filler fills it. tmpfs takes memory
    // only for what is written.
    let disk = match Tmpfs::mount(2 << 30) {
        Ok(disk) => Some(disk),
        Err(e) => {
            eprintln!("faults: NOT filling a disk on this machine: {e}");
            None
        }
    };
    let file = match &disk {
        Some(disk) => disk.path.join("fidelis.db"),
        None => {
            let file = dir.join("sqlite.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
            file
        }
    };
    let mut serve = Serve::start(
        bin,
        &format!("sqlite://{}", file.display()),
        dir.join("sqlite-serve.log"),
    )
    .await?;
    let seen = Arc::new(Seen::default());
    let load = start_and_kill(&mut serve, &seen, plan).await?;
    if let Some(disk) = &disk {
        seen.enter("disk full");
        let filler = disk.fill("filler");
        tokio::time::sleep(plan.disk_full).await;
        std::fs::remove_file(filler)?;
        seen.enter("disk freed");
        tokio::time::sleep(plan.calm).await;
    }
    recover_and_audit(serve, &seen, load, plan).await
}

/// The load, a calm phase, then the server killed and restarted `plan.kills` times.
async fn start_and_kill(serve: &mut Serve, seen: &Arc<Seen>, plan: &Plan) -> Result<Load> {
    let load = Load::start(serve, seen).await?;
    seen.enter("steady");
    tokio::time::sleep(plan.calm).await;
    seen.enter("serve killed");
    for _ in 0..plan.kills {
        serve.kill_and_restart().await?;
        tokio::time::sleep(plan.calm).await;
    }
    Ok(load)
}

/// A calm phase after the faults, then the load stopped and every journal audited.
async fn recover_and_audit(serve: Serve, seen: &Seen, load: Load, plan: &Plan) -> Result<Report> {
    seen.enter("recovery");
    tokio::time::sleep(plan.calm).await;
    load.stop().await;
    audit(&serve, seen).await
}

async fn postgres(bin: &Path, plan: &Plan) -> Result<Report> {
    let dir = root().join("target/faults");
    std::fs::create_dir_all(&dir)?;
    let pg = PgServer::start(PgOptions {
        durable: true,
        watchdog: true,
    })
    .map_err(anyhow::Error::msg)?;
    let url = pg.create_database("faults").map_err(anyhow::Error::msg)?;
    let mut serve = Serve::start(bin, &url, dir.join("postgres-serve.log")).await?;
    let seen = Arc::new(Seen::default());
    let load = start_and_kill(&mut serve, &seen, plan).await?;
    seen.enter("postgres stopped");
    pg.shutdown_fast();
    tokio::time::sleep(plan.pg_stopped).await;
    pg.restart().map_err(anyhow::Error::msg)?;
    seen.enter("postgres back");
    tokio::time::sleep(plan.calm).await;
    seen.enter("postgres frozen");
    pg.freeze();
    tokio::time::sleep(plan.pg_frozen).await;
    pg.thaw();
    let report = recover_and_audit(serve, &seen, load, plan).await;
    pg.stop();
    report
}

/// The clients.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(serve: &Serve, seen: &Arc<Seen>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let base = serve.base();
        let (status, body) = call(
            &http,
            reqwest::Method::PUT,
            &format!("{base}/api/v1/programs/{PROGRAM}"),
            Some(json!({"name": "Faults", "time_zone": "Europe/Berlin", "money_currency": "EUR",
                "currencies": [{"code": "points", "name": "Points", "kind": "redeemable", "expiry": {"policy": "never"}}],
                "earning": {"base": [{"currency": "points", "rate": "1"}]}})),
        )
        .await?;
        ensure!(status.is_success(), "creating the program: {status} {body}");
        for m in 0..MEMBERS {
            let (status, body) = call(
                &http,
                reqwest::Method::POST,
                &format!("{base}/api/v1/programs/{PROGRAM}/members"),
                // Enrolled before the purchases' date (they earn from the day of enrolment).
                Some(json!({"member": member(m), "profile": {"name": member(m)}, "enrolled_at": "2026-01-01T00:00:00Z"})),
            )
            .await?;
            ensure!(status.is_success(), "enrolling: {status} {body}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..CLIENTS)
            .map(|client| {
                tokio::spawn(client_loop(
                    client,
                    http.clone(),
                    base.clone(),
                    Arc::clone(&stop),
                    Arc::clone(seen),
                ))
            })
            .collect();
        Ok(Self { stop, tasks })
    }

    /// Stops sending new journals and waits for those in flight to get a final answer.
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn member(m: usize) -> String {
    format!("F-{m:03}")
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<(reqwest::StatusCode, Value)> {
    let mut request = http.request(method, url).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn client_loop(
    client: usize,
    http: reqwest::Client,
    base: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) {
    // A small deterministic generator per client: runs are comparable.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (client as u64 + 1);
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let m = next(MEMBERS as u64) as usize;
        let external_id = format!("c{client}-{n}");
        let (path, body, delta) = if next(10) < 7 {
            let amount = 1 + next(100) as i64;
            (
                format!("/api/v1/programs/{PROGRAM}/journals"),
                json!({"external_id": external_id, "member": member(m), "type": "purchase",
                       "occurred_at": OCCURRED_AT, "amount": format!("{amount}.00"), "currency": "EUR"}),
                amount,
            )
        } else {
            let points = 1 + next(40) as i64;
            (
                format!(
                    "/api/v1/programs/{PROGRAM}/members/{}/redemptions",
                    member(m)
                ),
                json!({"external_id": external_id, "currency": "points", "points": points,
                       "occurred_at": OCCURRED_AT}),
                -points,
            )
        };
        let mut retries = 0;
        // However long a fault lasts, a journal is retried for two minutes past it.
        let mut give_up = None::<Instant>;
        let answer = loop {
            let sent = http
                .post(format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await;
            let (label, answer) = match sent {
                Err(e) if e.is_timeout() => ("client timeout".to_owned(), None),
                Err(_) => ("no connection".to_owned(), None),
                Ok(response) => {
                    let status = response.status();
                    let replayed = response.headers().contains_key("idempotent-replayed");
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    let code = body["code"].as_str().unwrap_or_default().to_owned();
                    let label = if code.is_empty() {
                        status.as_u16().to_string()
                    } else {
                        format!("{} {code}", status.as_u16())
                    };
                    let answer = match status.as_u16() {
                        201 => Some(Answer::Applied),
                        200 if replayed => Some(Answer::Replayed),
                        409 => Some(Answer::Conflict),
                        422 => Some(Answer::Refused(code)),
                        _ => None,
                    };
                    (label, answer)
                }
            };
            seen.count(label);
            if let Some(answer) = answer {
                break answer;
            }
            if stop.load(Ordering::Relaxed) {
                let deadline =
                    *give_up.get_or_insert_with(|| Instant::now() + Duration::from_secs(120));
                if Instant::now() > deadline {
                    break Answer::GaveUp;
                }
            }
            retries += 1;
            tokio::time::sleep(Duration::from_millis(150)).await;
        };
        let mut journals = seen.journals.lock().unwrap_or_else(|e| e.into_inner());
        journals.push(Sent {
            external_id,
            member: m,
            path,
            body,
            delta,
            answer,
            retries,
        });
    }
}

#[derive(Default)]
struct Report {
    sent: usize,
    acknowledged: usize,
    acknowledged_after_unknown: usize,
    replayed_first: usize,
    refused: usize,
    gave_up: usize,
    conflicts: usize,
    lost: usize,
    doubled: usize,
    mismatched: usize,
    replay_failures: usize,
    statuses: BTreeMap<String, BTreeMap<String, u64>>,
    phases: Vec<String>,
}

impl Report {
    fn clean(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.mismatched == 0
            && self.replay_failures == 0
            && self.conflicts == 0
            && self.gave_up == 0
    }

    fn print(&self, database: &str) {
        println!(
            "faults on {database}: {} journals sent, {} acknowledged ({} after an answer that was not final, \
             {} of them first answered as a replay), {} refused by the rules, {} gave up, {} conflicts",
            self.sent,
            self.acknowledged,
            self.acknowledged_after_unknown,
            self.replayed_first,
            self.refused,
            self.gave_up,
            self.conflicts
        );
        println!(
            "  lost {} · doubled {} · mismatched {} · replays that did not replay {}",
            self.lost, self.doubled, self.mismatched, self.replay_failures
        );
        println!("  status codes clients saw, by phase:");
        for phase in &self.phases {
            let Some(counts) = self.statuses.get(phase) else {
                continue;
            };
            let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
            println!("    {phase:<18} {}", counts.join(", "));
        }
    }
}

/// Checks every journal against the server after the faults.
async fn audit(serve: &Serve, seen: &Seen) -> Result<Report> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = serve.base();
    let journals = std::mem::take(&mut *seen.journals.lock().unwrap_or_else(|e| e.into_inner()));
    let mut report = Report {
        statuses: seen
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        phases: [
            "steady",
            "serve killed",
            "disk full",
            "disk freed",
            "postgres stopped",
            "postgres back",
            "postgres frozen",
            "recovery",
        ]
        .map(str::to_owned)
        .to_vec(),
        sent: journals.len(),
        ..Report::default()
    };
    // Per member: the points each acknowledged journal must have moved.
    let mut expected: Vec<HashMap<String, i64>> = vec![HashMap::new(); MEMBERS];
    let mut unknown: Vec<Vec<String>> = vec![Vec::new(); MEMBERS];
    let mut refused: Vec<Vec<String>> = vec![Vec::new(); MEMBERS];
    for j in &journals {
        match &j.answer {
            Answer::Applied | Answer::Replayed => {
                report.acknowledged += 1;
                if j.retries > 0 {
                    report.acknowledged_after_unknown += 1;
                }
                if j.answer == Answer::Replayed {
                    report.replayed_first += 1;
                }
                expected[j.member].insert(j.external_id.clone(), j.delta);
                // Stored, and a re-post replays it.
                let (status, _) = call(
                    &http,
                    reqwest::Method::GET,
                    &format!(
                        "{base}/api/v1/programs/{PROGRAM}/journals/{}",
                        j.external_id
                    ),
                    None,
                )
                .await?;
                if status != reqwest::StatusCode::OK {
                    report.lost += 1;
                    eprintln!(
                        "faults: acknowledged journal {} is not stored ({status})",
                        j.external_id
                    );
                }
                let response = http
                    .post(format!("{base}{}", j.path))
                    .bearer_auth(TOKEN)
                    .json(&j.body)
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::OK
                    || !response.headers().contains_key("idempotent-replayed")
                {
                    report.replay_failures += 1;
                    eprintln!(
                        "faults: re-posting {} answered {} instead of a replay",
                        j.external_id,
                        response.status()
                    );
                }
            }
            Answer::Refused(_) => {
                report.refused += 1;
                refused[j.member].push(j.external_id.clone());
            }
            Answer::Conflict => {
                report.conflicts += 1;
                eprintln!("faults: {} answered 409 to its own retry", j.external_id);
            }
            Answer::GaveUp => {
                report.gave_up += 1;
                unknown[j.member].push(j.external_id.clone());
            }
        }
    }
    for m in 0..MEMBERS {
        let ledger = ledger_by_journal(&http, &base, &member(m)).await?;
        let mut balance_expected = 0;
        for (id, delta) in &expected[m] {
            balance_expected += delta;
            let found = ledger.get(id).copied().unwrap_or(0);
            if found == *delta {
                continue;
            }
            if found == 0 {
                report.lost += 1;
            } else if found.abs() > delta.abs() {
                report.doubled += 1;
            } else {
                report.mismatched += 1;
            }
            eprintln!(
                "faults: journal {id} moved {found} points in the ledger, its answer said {delta}"
            );
        }
        for id in &refused[m] {
            if ledger.get(id).copied().unwrap_or(0) != 0 {
                report.mismatched += 1;
                eprintln!("faults: refused journal {id} moved points");
            }
        }
        for id in &unknown[m] {
            balance_expected += ledger.get(id).copied().unwrap_or(0);
        }
        let ledger_sum: i64 = ledger.values().sum();
        let (status, body) = call(
            &http,
            reqwest::Method::GET,
            &format!(
                "{base}/api/v1/programs/{PROGRAM}/members/{}/balances",
                member(m)
            ),
            None,
        )
        .await?;
        ensure!(
            status.is_success(),
            "balances of {}: {status} {body}",
            member(m)
        );
        let available = body["balances"][0]["available"]
            .as_i64()
            .unwrap_or(i64::MIN);
        if available != ledger_sum || available != balance_expected {
            report.mismatched += 1;
            eprintln!(
                "faults: {} has {available} points; its ledger sums to {ledger_sum}, its acknowledged journals to {balance_expected}",
                member(m)
            );
        }
    }
    Ok(report)
}

/// A member's whole ledger: points moved per journal external id.
async fn ledger_by_journal(
    http: &reqwest::Client,
    base: &str,
    member: &str,
) -> Result<HashMap<String, i64>> {
    let mut sums = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/programs/{PROGRAM}/members/{member}/ledger?limit=500");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(c);
        }
        let (status, page) = call(http, reqwest::Method::GET, &url, None).await?;
        ensure!(status.is_success(), "ledger of {member}: {status} {page}");
        for entry in page["entries"].as_array().into_iter().flatten() {
            if entry["pool"] == "available" {
                let journal = entry["journal"].as_str().unwrap_or_default().to_owned();
                *sums.entry(journal).or_insert(0) += entry["points"].as_i64().unwrap_or(0);
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(sums),
        }
    }
}
