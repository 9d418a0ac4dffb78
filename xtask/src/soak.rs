//! `cargo xtask soak [--minutes 30] [--members 2000] [--clients 8]`: a long run of mixed
//! realtime traffic against a real `fidelis serve` on a durable PostgreSQL, with the server
//! restarted (SIGTERM, then started again) half-way. A benchmark command, not part of the
//! test suite.
//!
//! Clients post purchases, redemptions, partial refunds of their own purchases, transfers
//! between members and balance reads for random members of the retail template (as shipped,
//! without its fraud rules: the traffic is synthetic and fast); the jobs run every minute.
//! A request that gets no final answer (the server restarting: a refused connection, a
//! 503) is sent again with the same body until it does. At the end:
//! - no answer other than 2xx and the expected refusals (`insufficient_points` and the
//!   like, listed in `EXPECTED`) — anything else fails the run;
//! - the server's resident memory, sampled every five seconds, is flat: in each of the
//!   server's lives, the last quarter's mean within 25 % (plus 16 MiB) of the second
//!   quarter's;
//! - every account's available and pending points equal the sums of its entries (checked
//!   in the database, for every member).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fidelis_testkit::{PgOptions, PgServer};
use serde_json::{Value, json};

use crate::{ensure_postgres, root, run_cmd};

const TOKEN: &str = "soak-admin-token-0123456789";

/// Refusals a client of this traffic may meet: the request was fine, the member's state
/// says no.
const EXPECTED: &[&str] = &["insufficient_points", "transfer_limit"];

struct Options {
    minutes: f64,
    members: u32,
    clients: usize,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        minutes: 30.0,
        members: 2000,
        clients: 8,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => o.minutes = value.parse()?,
            "--members" => o.members = value.parse()?,
            "--clients" => o.clients = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    ensure!(
        o.minutes > 0.0 && o.members >= 2 && o.clients >= 1,
        "bad options"
    );
    Ok(o)
}

/// The server process: restarted in the middle, stopped when dropped.
struct Serve {
    child: Mutex<Option<Child>>,
    bin: std::path::PathBuf,
    url: String,
    port: u16,
}

impl Serve {
    fn start(&self) -> Result<u32> {
        let child = Command::new(&self.bin)
            .arg("--database")
            .arg(&self.url)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .env("FIDELIS_ADMIN_TOKEN", TOKEN)
            .env("FIDELIS_RATE_LIMIT", "10000000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let pid = child.id();
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            ensure!(Instant::now() < deadline, "fidelis serve did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(pid)
    }

    /// SIGTERM (a graceful stop, as a deployment does), then waits for the process.
    fn stop(&self) -> Result<()> {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// By operation: status (and refusal code) → count.
    answers: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Sends that got no final answer and were sent again.
    resent: AtomicU64,
    unexpected: Mutex<Vec<String>>,
}

impl Seen {
    fn count(&self, op: &str, answer: String) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        *answers
            .entry(op.to_owned())
            .or_default()
            .entry(answer)
            .or_default() += 1;
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A small deterministic generator per client (no dependency for it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let o = options(args)?;
    ensure_postgres()?;
    run_cmd(Command::new("cargo").args(["build", "--release", "-p", "fidelis"]))?;
    let bin = root().join("target/release/fidelis");
    let dir = root().join("target/soak");
    std::fs::create_dir_all(&dir)?;
    let server = PgServer::start(PgOptions {
        durable: true,
        watchdog: true,
    })
    .map_err(anyhow::Error::msg)?;
    let url = server.create_database("soak").map_err(anyhow::Error::msg)?;
    crate::create_bench_program(&bin, &url, &dir, false, crate::BenchPromotions::Shipped)?;
    // Points members may give each other (the template's are not transferable).
    let file = dir.join("bench-program.json");
    let mut program: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    for currency in program["currencies"].as_array_mut().into_iter().flatten() {
        if currency["code"] == "points" {
            currency["transfer"] = json!({"daily_limit": 100});
        }
    }
    std::fs::write(&file, serde_json::to_vec_pretty(&program)?)?;
    let out = Command::new(&bin)
        .arg("--database")
        .arg(&url)
        .args(["program", "apply"])
        .arg(&file)
        .output()?;
    ensure!(
        out.status.success(),
        "program apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let members: String = (0..o.members)
        .map(|m| {
            format!("{{\"member\": \"S{m:06}\", \"enrolled_at\": \"2026-01-01T00:00:00Z\"}}\n")
        })
        .collect();
    let members_file = dir.join("members.ndjson");
    std::fs::write(&members_file, members)?;
    let out = Command::new(&bin)
        .arg("--database")
        .arg(&url)
        .args(["members", "import", "--program", "bench"])
        .arg(&members_file)
        .output()?;
    ensure!(
        out.status.success(),
        "members import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serve = Arc::new(Serve {
        child: Mutex::new(None),
        bin: bin.clone(),
        url: url.clone(),
        port: std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port(),
    });
    let first_pid = serve.start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(traffic(&o, Arc::clone(&serve), first_pid));
    serve.stop()?;
    let (seen, samples) = result?;
    let check = balances_check(&server)?;
    server.stop();
    report(&o, &seen, &samples, &check)
}

/// Memory samples: (life of the server, seconds since the start, KiB).
type Samples = Vec<(usize, f64, u64)>;

async fn traffic(o: &Options, serve: Arc<Serve>, first_pid: u32) -> Result<(Arc<Seen>, Samples)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = format!("http://127.0.0.1:{}/api/v1/programs/bench", serve.port);
    let seen = Arc::new(Seen::default());
    let started = Instant::now();
    let total = Duration::from_secs_f64(o.minutes * 60.0);
    let done = Arc::new(AtomicBool::new(false));
    let pid = Arc::new(Mutex::new((0usize, first_pid)));
    let mut tasks = Vec::new();
    for client in 0..o.clients {
        let (http, base, seen, done) = (http.clone(), base.clone(), seen.clone(), done.clone());
        let members = u64::from(o.members);
        tasks.push(tokio::spawn(async move {
            client_loop(client, members, &http, &base, &seen, &done).await
        }));
    }
    // The jobs every minute.
    let jobs = {
        let (http, base, seen, done) = (http.clone(), base.clone(), seen.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                for _ in 0..600 {
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                send(
                    &http,
                    &seen,
                    "jobs",
                    reqwest::Method::POST,
                    &format!("{base}/jobs/run"),
                    Some(json!({})),
                )
                .await;
            }
        })
    };
    // Memory every five seconds; the restart half-way.
    let mut samples = Vec::new();
    let mut restarted = false;
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (life, p) = *pid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kib) = rss_kib(p) {
            samples.push((life, started.elapsed().as_secs_f64(), kib));
        }
        if !restarted && started.elapsed() >= total / 2 {
            restarted = true;
            eprintln!(
                "soak: restarting the server (SIGTERM, then start) at {:?}",
                started.elapsed()
            );
            let serve = Arc::clone(&serve);
            let new_pid = tokio::task::spawn_blocking(move || -> Result<u32> {
                serve.stop()?;
                serve.start()
            })
            .await??;
            *pid.lock().unwrap_or_else(|e| e.into_inner()) = (1, new_pid);
        }
    }
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    jobs.await?;
    Ok((seen, samples))
}

/// Sends until the answer is final (anything but no answer or a 5xx); counts it.
async fn send(
    http: &reqwest::Client,
    seen: &Seen,
    op: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut request = http.request(method.clone(), url).bearer_auth(TOKEN);
        if let Some(body) = &body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) if !response.status().is_server_error() => {
                let status = response.status();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                if status.is_success() {
                    seen.count(op, status.as_u16().to_string());
                    return Some(answer);
                }
                let code = answer["code"].as_str().unwrap_or("").to_owned();
                seen.count(op, format!("{} {code}", status.as_u16()));
                let expected = (status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
                    && EXPECTED.contains(&code.as_str()))
                    || (op == "jobs" && code == "jobs_running");
                if !expected {
                    seen.unexpected
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{op} {url}: {status} {answer}"));
                }
                return None;
            }
            _ if Instant::now() > deadline => {
                seen.unexpected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{op} {url}: no final answer in two minutes"));
                return None;
            }
            _ => {
                seen.resent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn client_loop(
    client: usize,
    members: u64,
    http: &reqwest::Client,
    base: &str,
    seen: &Seen,
    done: &AtomicBool,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (client as u64 + 1).wrapping_mul(0x2545_F491));
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut purchases: Vec<(String, String)> = Vec::new();
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("s{run}-{client}-{n}");
        let member = format!("S{:06}", rng.below(members));
        let now = now_rfc3339();
        match rng.below(100) {
            0..55 => {
                let cents = 500 + rng.below(20_000);
                let body = json!({"external_id": id, "member": member, "type": "purchase", "occurred_at": now,
                                  "amount": format!("{}.{:02}", cents / 100, cents % 100), "currency": "EUR"});
                if send(
                    http,
                    seen,
                    "purchase",
                    reqwest::Method::POST,
                    &format!("{base}/journals"),
                    Some(body),
                )
                .await
                .is_some()
                {
                    purchases.push((id, member));
                    if purchases.len() > 200 {
                        purchases.remove(0);
                    }
                }
            }
            55..70 => {
                let body =
                    json!({"external_id": id, "currency": "points", "points": 1 + rng.below(50)});
                send(
                    http,
                    seen,
                    "redemption",
                    reqwest::Method::POST,
                    &format!("{base}/members/{member}/redemptions"),
                    Some(body),
                )
                .await;
            }
            70..80 if !purchases.is_empty() => {
                let (original, owner) =
                    purchases.swap_remove(rng.below(purchases.len() as u64) as usize);
                let body = json!({"external_id": id, "member": owner, "type": "refund", "occurred_at": now,
                                  "original_external_id": original, "amount": "3.00", "currency": "EUR"});
                send(
                    http,
                    seen,
                    "refund",
                    reqwest::Method::POST,
                    &format!("{base}/journals"),
                    Some(body),
                )
                .await;
            }
            80..90 => {
                let to = format!("S{:06}", rng.below(members));
                if to == member {
                    continue;
                }
                let body = json!({"external_id": id, "to": to, "currency": "points", "points": 1 + rng.below(20)});
                send(
                    http,
                    seen,
                    "transfer",
                    reqwest::Method::POST,
                    &format!("{base}/members/{member}/transfers"),
                    Some(body),
                )
                .await;
            }
            _ => {
                send(
                    http,
                    seen,
                    "balance",
                    reqwest::Method::GET,
                    &format!("{base}/members/{member}/balances"),
                    None,
                )
                .await;
            }
        }
    }
}

/// Now in RFC 3339 (UTC, milliseconds) from the system clock, without a date library.
fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (now.as_secs() as i64, now.subsec_millis());
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Accounts whose points are not the sums of their entries (by pool), and the number of
/// accounts checked.
fn balances_check(server: &PgServer) -> Result<(u64, u64)> {
    let query = "SELECT count(*) FILTER (WHERE a.available <> COALESCE(e.available, 0) OR a.pending <> COALESCE(e.pending, 0)), count(*) \
         FROM accounts a LEFT JOIN (SELECT member_id, currency, \
           sum(amount) FILTER (WHERE pool = 'available') AS available, \
           sum(amount) FILTER (WHERE pool = 'pending') AS pending \
           FROM entries GROUP BY member_id, currency) e USING (member_id, currency)";
    let answer = crate::bench_api::psql_answer(server, "soak", query)?;
    let mut parts = answer.split('|').map(|v| v.trim().parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(wrong)), Some(Ok(all))) => Ok((wrong, all)),
        _ => bail!("the balance check answered {answer:?}"),
    }
}

fn report(o: &Options, seen: &Seen, samples: &Samples, check: &(u64, u64)) -> Result<()> {
    println!(
        "\nsoak: {} minutes, {} members, {} clients, the server restarted half-way\n",
        o.minutes, o.members, o.clients
    );
    println!("| operation | answers |");
    println!("| --- | --- |");
    for (op, answers) in seen
        .answers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let list: Vec<String> = answers.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        println!("| {op} | {} |", list.join(", "));
    }
    println!(
        "\nsent again after no final answer (the restart): {}",
        seen.resent.load(Ordering::Relaxed)
    );
    let mut flat = true;
    for life in 0..2 {
        let kib: Vec<u64> = samples
            .iter()
            .filter(|s| s.0 == life)
            .map(|s| s.2)
            .collect();
        if kib.len() < 8 {
            println!("memory, life {}: too few samples ({})", life + 1, kib.len());
            continue;
        }
        let q = kib.len() / 4;
        let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
        let (second, last) = (mean(&kib[q..2 * q]), mean(&kib[kib.len() - q..]));
        let ok = last <= second * 1.25 + 16.0 * 1024.0;
        flat &= ok;
        println!(
            "memory, life {}: second quarter {:.1} MiB, last quarter {:.1} MiB, peak {:.1} MiB — {}",
            life + 1,
            second / 1024.0,
            last / 1024.0,
            *kib.iter().max().unwrap_or(&0) as f64 / 1024.0,
            if ok { "flat" } else { "GROWING" }
        );
    }
    println!(
        "accounts whose points are not the sums of their entries: {} of {}",
        check.0, check.1
    );
    let unexpected = seen.unexpected.lock().unwrap_or_else(|e| e.into_inner());
    for u in unexpected.iter().take(20) {
        eprintln!("soak: unexpected: {u}");
    }
    ensure!(
        unexpected.is_empty(),
        "{} unexpected answers",
        unexpected.len()
    );
    ensure!(
        check.0 == 0,
        "{} accounts disagree with their entries",
        check.0
    );
    ensure!(check.1 > 0, "no accounts were checked");
    ensure!(flat, "the server's memory grew");
    Ok(())
}
