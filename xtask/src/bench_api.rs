//! `cargo xtask bench-api`: realtime `POST /journals` under load on PostgreSQL, beside a
//! bare PostgreSQL transaction doing the same writes, measured in the same run.
//!
//! The API side is `wrk` (Debian's package) with 16 connections posting unique purchases
//! to `fidelis serve`; the bare side is `pgbench` with 16 clients running: lock the
//! member's balance row, insert a ledger entry, update the balance. Both on one durable
//! PostgreSQL server. Reports throughput, p50 and p99 of each and their ratios, and the API
//! at 1, 8 and 16 connections against the bare one-statement journal (one `UPDATE …
//! RETURNING` feeding one `INSERT`) at the same counts, as `RATIO` lines a script reads.
//! The program is the retail template with its promotions as shipped (`--promotions none`
//! or `200` for the variants).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fidelis_testkit::{PgOptions, PgServer};

use crate::{ensure_postgres, root, run_cmd};

struct Options {
    seconds: u32,
    connections: u32,
    members: u32,
    /// The template's fraud rules on (the default), or removed (`--fraud off`): the
    /// rules' cost is the ratio of two runs.
    fraud: bool,
    promotions: crate::BenchPromotions,
    /// A binary to measure instead of building this checkout's (another commit's build).
    bin: Option<std::path::PathBuf>,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seconds: 30,
        connections: 16,
        members: 10_000,
        fraud: true,
        promotions: crate::BenchPromotions::Shipped,
        bin: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => o.seconds = value.parse()?,
            "--connections" => o.connections = value.parse()?,
            "--members" => o.members = value.parse()?,
            "--promotions" => o.promotions = crate::BenchPromotions::parse(value)?,
            "--bin" => o.bin = Some(value.into()),
            "--fraud" => {
                o.fraud = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => bail!("--fraud is on or off"),
                }
            }
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

#[derive(Clone)]
struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ensure_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: installing wrk (apt-get install wrk)…");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "wrk"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("the load benchmark needs wrk: apt-get install wrk"),
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let o = options(args)?;
    ensure_postgres()?;
    ensure_wrk()?;
    let bin = match &o.bin {
        Some(bin) => bin.clone(),
        None => {
            run_cmd(Command::new("cargo").args(["build", "--release", "-p", "fidelis"]))?;
            root().join("target/release/fidelis")
        }
    };
    let dir = root().join("target/bench-api");
    std::fs::create_dir_all(&dir)?;
    let server = PgServer::start(PgOptions {
        durable: true,
        watchdog: true,
    })
    .map_err(anyhow::Error::msg)?;
    let bare = bare(&server, &dir, &o)?;
    let mut one_statement = Vec::new();
    for connections in LADDER.into_iter().chain([o.connections]) {
        if one_statement.iter().any(|(c, _)| *c == connections) {
            continue;
        }
        one_statement.push((
            connections,
            bare_one_statement(&server, &dir, &o, connections)?,
        ));
    }
    let (api, holds, vouchers, mut ladder) = api(&server, &bin, &dir, &o)?;
    server.stop();
    let sqlite = sqlite(&bin, &dir, &o)?;
    ladder.push((o.connections, api.clone()));
    ladder.sort_by_key(|(c, _)| *c);
    println!(
        "\nrealtime POST /journals on PostgreSQL (durable), {} connections × {} s, {} members, the retail template with promotions {}, fraud rules {} (the API rows: the median of {ROUNDS} interleaved rounds):\n",
        o.connections,
        o.seconds,
        o.members,
        o.promotions.name(),
        if o.fraud { "on" } else { "off" }
    );
    println!("| | per second | p50 (ms) | p99 (ms) | failed |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, f) in [
        ("API", &api),
        ("bare transaction", &bare),
        ("API: pay with points (holds and captures)", &holds),
        ("API: voucher redemptions (in part)", &vouchers),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            f.per_second, f.p50_ms, f.p99_ms, f.failed
        );
    }
    println!(
        "\nthroughput API / bare = {:.2} (target ≥ 0.60); p99 API / bare = {:.2} (target ≤ 3)",
        api.per_second / bare.per_second,
        api.p99_ms / bare.p99_ms
    );
    println!(
        "\nagainst the bare one-statement journal (one UPDATE … RETURNING feeding one INSERT, its own transaction):\n"
    );
    println!(
        "| connections | API per second | p50 (ms) | p99 (ms) | bare one-statement per second | p50 (ms) | p99 (ms) | API / bare | p99 API / bare |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut ratio_lines = Vec::new();
    let label = o.promotions.name().replace(' ', "-");
    for (connections, a) in &ladder {
        let Some((_, b)) = one_statement.iter().find(|(c, _)| c == connections) else {
            continue;
        };
        println!(
            "| {connections} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
            a.per_second,
            a.p50_ms,
            a.p99_ms,
            b.per_second,
            b.p50_ms,
            b.p99_ms,
            a.per_second / b.per_second,
            a.p99_ms / b.p99_ms
        );
        ratio_lines.push(format!(
            "RATIO bench-api connections={connections} promotions={label} api/bare-one-statement {:.3} p99 {:.3} p50-api-ms {:.3}",
            a.per_second / b.per_second,
            a.p99_ms / b.p99_ms,
            a.p50_ms
        ));
    }
    println!();
    ratio_lines.push(format!(
        "RATIO bench-api connections={} promotions={label} api/bare-transaction {:.3}",
        o.connections,
        api.per_second / bare.per_second
    ));
    println!(
        "\nrealtime POST /journals on SQLite (durable), {} members, the same program, against its bare durable transaction (one journal row, one ledger row, one balance update per transaction, one connection; the median of {ROUNDS}):\n",
        o.members
    );
    println!(
        "| connections | API per second | p50 (ms) | p99 (ms) | bare per second | API / bare |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (connections, a) in &sqlite.api {
        println!(
            "| {connections} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
            a.per_second,
            a.p50_ms,
            a.p99_ms,
            sqlite.bare,
            a.per_second / sqlite.bare
        );
        ratio_lines.push(format!(
            "RATIO bench-api database=sqlite connections={connections} promotions={label} api/bare-durable-transaction {:.3} p50-api-ms {:.3}",
            a.per_second / sqlite.bare,
            a.p50_ms
        ));
    }
    println!();
    for line in &ratio_lines {
        println!("{line}");
    }
    println!(
        "pay with points / POST /journals = {:.2} (target ≥ 0.80)",
        holds.per_second / api.per_second
    );
    println!(
        "voucher redemptions / POST /journals = {:.2} (target ≥ 0.80)",
        vouchers.per_second / api.per_second
    );
    std::fs::write(
        dir.join("results.json"),
        format!(
            "{{\"api\": {{\"per_second\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}, \"bare\": {{\"per_second\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}}}\n",
            api.per_second, api.p50_ms, api.p99_ms, bare.per_second, bare.p50_ms, bare.p99_ms
        ),
    )?;
    anyhow::ensure!(api.failed == 0, "{} API requests failed", api.failed);
    for (connections, a) in &sqlite.api {
        anyhow::ensure!(
            a.failed == 0,
            "{} API requests failed on SQLite at {connections} connections",
            a.failed
        );
    }
    anyhow::ensure!(
        holds.failed == 0,
        "{} hold or capture requests failed",
        holds.failed
    );
    anyhow::ensure!(
        vouchers.failed == 0,
        "{} voucher redemptions failed",
        vouchers.failed
    );
    Ok(())
}

/// The start of every wrk script: each thread numbered (`id`), for unique external ids.
const WRK_THREADS: &str = r#"local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end
"#;

/// The end of every wrk script: one line with requests, duration, p50, p99 and failures,
/// which [`figures`] reads.
const WRK_DONE: &str = r#"function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"#;

fn api(
    server: &PgServer,
    bin: &Path,
    dir: &Path,
    o: &Options,
) -> Result<(Figures, Figures, Figures, Vec<(u32, Figures)>)> {
    let url = server.create_database("api").map_err(anyhow::Error::msg)?;
    let quiet = |args: &[&str]| -> Result<()> {
        let out = Command::new(bin)
            .arg("--database")
            .arg(&url)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "fidelis {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    crate::create_bench_program(bin, &url, dir, o.fraud, o.promotions)?;
    let members: String = (0..o.members)
        .map(|m| {
            format!("{{\"member\": \"M{m:07}\", \"enrolled_at\": \"2026-01-01T00:00:00Z\"}}\n")
        })
        .collect();
    let members_file = dir.join("members.ndjson");
    std::fs::write(&members_file, members)?;
    quiet(&[
        "members",
        "import",
        "--program",
        "bench",
        members_file.to_str().context("path")?,
    ])?;
    let token = TOKEN;
    let (serve, port) = serve(bin, &url)?;
    let purchase_script = dir.join("purchase.lua");
    purchases_script(&purchase_script, o.members)?;
    let occurred_at = chrono_like_now_minus_minute();
    // Warm up (connections, caches), then measure.
    let wrk_with = |script: &Path, seconds: u32, connections: u32| -> Result<String> {
        run_wrk(port, script, seconds, connections)
    };
    let wrk = |script: &Path, seconds: u32| wrk_with(script, seconds, o.connections);
    wrk(&purchase_script, 5)?;
    // The tables were created moments ago: give the planner statistics, as any database
    // in service has (the bare side gets the same for its table).
    psql(server, "api", "ANALYZE")?;
    wrk(&purchase_script, 3)?;
    let (server_before, all_before) = (process_cpu_seconds(serve.0.id()), machine_cpu_seconds());
    let output = wrk(&purchase_script, o.seconds)?;
    let (server_cpu, all_cpu) = (
        process_cpu_seconds(serve.0.id()) - server_before,
        machine_cpu_seconds() - all_before,
    );
    let purchases = figures(&output)?;
    // How many purchases the fraud rules held (a held journal is answered 202 and costs
    // less than a processed one: a large share would flatter the figure).
    let held = psql_answer(server, "api", "SELECT count(*) FROM held_journals")?;
    let posted = psql_answer(
        server,
        "api",
        "SELECT count(*) FROM journals WHERE type = 'purchase'",
    )?;
    eprintln!("xtask: purchases held by fraud rules: {held} (of {posted} processed besides)");
    eprintln!(
        "xtask: CPU per API request: {:.3} ms in fidelis serve, {:.3} ms in all (PostgreSQL, wrk, kernel)",
        server_cpu * 1e3 / (purchases.per_second * f64::from(o.seconds)),
        all_cpu * 1e3 / (purchases.per_second * f64::from(o.seconds))
    );

    // Pay with points: holds of one point alternating with captures of holds whose answer
    // the same wrk thread has read, for members given 1,000 points first.
    let grants: String = (0..o.members)
        .map(|m| format!("{{\"external_id\":\"grant-{m}\",\"member\":\"M{m:07}\",\"type\":\"purchase\",\"occurred_at\":\"{occurred_at}\",\"amount\":\"1000.00\",\"currency\":\"EUR\"}}\n"))
        .collect();
    let grants_file = dir.join("grants.ndjson");
    std::fs::write(&grants_file, grants)?;
    let out = Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-ndjson",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg("--data-binary")
        .arg(format!("@{}", grants_file.display()))
        .arg(format!(
            "http://127.0.0.1:{port}/api/v1/programs/bench/journals/batch"
        ))
        .output()?;
    anyhow::ensure!(out.status.success(), "granting points for the holds failed");
    let holds_script = dir.join("holds.lua");
    std::fs::write(
        &holds_script,
        format!(
            r#"-- Holds for random members, alternating with captures of holds already answered.
{WRK_THREADS}function init(args)
  counter = 0
  holds = 0
  held = {{}}
  first, last = 1, 0
  prefix = "h" .. id .. "-" .. os.time()
  math.randomseed(os.time() + id)
end
local headers = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {token}"}}
function request()
  counter = counter + 1
  if counter % 2 == 0 and first <= last then
    local order = held[first]
    held[first] = nil
    first = first + 1
    return wrk.format("POST", "/api/v1/programs/bench/holds/" .. order .. "/capture", headers, "")
  end
  holds = holds + 1
  local body = string.format('{{"order_id":"%s-%d","member":"M%07d","currency":"points","points":1,"ttl_seconds":3600}}',
    prefix, holds, math.random(0, {holders} - 1))
  return wrk.format("POST", "/api/v1/programs/bench/holds", headers, body)
end
function response(status, headers, body)
  if status == 201 then
    local order = string.match(body, '"status":"held"') and string.match(body, '"order_id":"([^"]+)"')
    if order then
      last = last + 1
      held[last] = order
    end
  elseif status >= 400 and (shown or 0) < 3 then
    shown = (shown or 0) + 1
    io.write(string.format("FAILED %d %s\n", status, body))
  end
end
{WRK_DONE}"#,
            holders = o.members
        ),
    )?;
    wrk(&holds_script, 3)?;
    let output = wrk(&holds_script, o.seconds)?;
    for failed in output.lines().filter(|l| l.starts_with("FAILED ")) {
        eprintln!("xtask: {failed}");
    }
    let holds = figures(&output)?;

    // Vouchers: one €10 voucher (the template's `ten-euros`) per member, issued by the
    // bulk CLI, then redemptions of one cent each (the value is spent in parts) of random
    // vouchers, each with its own key.
    let codes = dir.join("voucher-codes.csv");
    let members_list = dir.join("members.txt");
    std::fs::write(
        &members_list,
        (0..o.members)
            .map(|m| format!("M{m:07}\n"))
            .collect::<String>(),
    )?;
    quiet(&[
        "vouchers",
        "issue",
        "--program",
        "bench",
        "--definition",
        "ten-euros",
        "--members",
        members_list.to_str().context("path")?,
        "--run",
        "bench",
        "--codes",
        codes.to_str().context("path")?,
    ])?;
    let vouchers_script = dir.join("vouchers.lua");
    std::fs::write(
        &vouchers_script,
        format!(
            r#"-- Redemptions of one cent of random vouchers, each with a unique key.
{WRK_THREADS}function init(args)
  counter = 0
  codes = {{}}
  for line in io.lines("{codes}") do
    local code = string.match(line, ",(.+)$")
    if code and code ~= "code" then table.insert(codes, code) end
  end
  prefix = "v" .. id .. "-" .. os.time()
  math.randomseed(os.time() + id)
end
local headers = {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {token}"}}
function request()
  counter = counter + 1
  local code = codes[math.random(1, #codes)]
  local body = string.format('{{"key":"%s-%d","amount":"0.01"}}', prefix, counter)
  return wrk.format("POST", "/api/v1/programs/bench/vouchers/" .. code .. "/redeem", headers, body)
end
function response(status, headers, body)
  if status >= 400 and (shown or 0) < 3 then
    shown = (shown or 0) + 1
    io.write(string.format("FAILED %d %s\n", status, body))
  end
end
{WRK_DONE}"#,
            codes = codes.display()
        ),
    )?;
    wrk(&vouchers_script, 3)?;
    let output = wrk(&vouchers_script, o.seconds)?;
    for failed in output.lines().filter(|l| l.starts_with("FAILED ")) {
        eprintln!("xtask: {failed}");
    }
    let vouchers = figures(&output)?;
    // More rounds of the three, interleaved, so each ratio compares runs made under the
    // same conditions (the tables grow as the runs go); the medians are reported.
    let (mut p, mut h, mut v) = (vec![purchases], vec![holds], vec![vouchers]);
    for _ in 1..ROUNDS {
        p.push(figures(&wrk(&purchase_script, o.seconds)?)?);
        h.push(figures(&wrk(&holds_script, o.seconds)?)?);
        v.push(figures(&wrk(&vouchers_script, o.seconds)?)?);
    }
    // The same purchases at fewer connections (the bare one-statement journal is measured
    // at the same counts).
    let mut ladder = Vec::new();
    for connections in LADDER {
        if connections == o.connections {
            continue;
        }
        wrk_with(&purchase_script, 2, connections)?;
        ladder.push((
            connections,
            figures(&wrk_with(&purchase_script, o.seconds, connections)?)?,
        ));
    }
    // What one journal costs the database: statements, rows and WAL bytes, alone (one
    // connection) and grouped (eight), from `pg_stat_statements` and the WAL position.
    psql(
        server,
        "api",
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
    )?;
    for connections in [1, 8] {
        let journals = || -> Result<f64> {
            Ok(psql_answer(
                server,
                "api",
                "SELECT (SELECT count(*) FROM journals) + (SELECT count(*) FROM held_journals)",
            )?
            .parse()?)
        };
        psql(server, "api", "SELECT pg_stat_statements_reset()")?;
        let (before, lsn) = (
            journals()?,
            psql_answer(server, "api", "SELECT pg_current_wal_lsn()")?,
        );
        wrk_with(&purchase_script, 4, connections)?;
        let posted = journals()? - before;
        let wal: f64 = psql_answer(
            server,
            "api",
            &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')"),
        )?
        .parse()?;
        let sums = psql_answer(
            server,
            "api",
            "SELECT sum(calls), sum(rows) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = 'api' AND s.query NOT LIKE '%pg_stat%' AND s.query NOT LIKE '%count(*)%'",
        )?;
        let (statements, rows) = sums.split_once('|').context("statement sums")?;
        let (statements, rows): (f64, f64) = (statements.parse()?, rows.parse()?);
        std::fs::write(
            dir.join(format!("statements-{connections}.txt")),
            psql_answer(
                server,
                "api",
                "SELECT calls, rows, round(total_exec_time::numeric, 1) AS ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) \
                 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'api' ORDER BY calls DESC",
            )?,
        )?;
        // Where the WAL bytes go, by record kind, with the full-page images apart (up to
        // what is flushed: pg_walinspect refuses an end past it, and the insert position
        // can be ahead by a record written since).
        psql(
            server,
            "api",
            "CREATE EXTENSION IF NOT EXISTS pg_walinspect",
        )?;
        std::fs::write(
            dir.join(format!("wal-{connections}.txt")),
            psql_answer(
                server,
                "api",
                &format!(
                    "SELECT \"resource_manager/record_type\", count, record_size, fpi_size, combined_size \
                     FROM pg_get_wal_stats('{lsn}', pg_current_wal_flush_lsn(), true) WHERE count > 0 ORDER BY combined_size DESC"
                ),
            )?,
        )?;
        println!(
            "COST bench-api connections={connections} per-journal statements {:.2} rows {:.2} wal-bytes {:.0} (journals {posted:.0})",
            statements / posted.max(1.0),
            rows / posted.max(1.0),
            wal / posted.max(1.0)
        );
    }
    for (i, ((p, h), v)) in p.iter().zip(&h).zip(&v).enumerate() {
        eprintln!(
            "xtask: round {}: POST /journals {:.0}/s, holds and captures {:.0}/s ({:.2}), voucher redemptions {:.0}/s ({:.2})",
            i + 1,
            p.per_second,
            h.per_second,
            h.per_second / p.per_second,
            v.per_second,
            v.per_second / p.per_second
        );
    }
    Ok((median(p), median(h), median(v), ladder))
}

/// The SQLite side: the API at one and eight connections, and the bare durable
/// transaction's journals per second.
struct Sqlite {
    api: Vec<(u32, Figures)>,
    bare: f64,
}

/// Realtime purchases against `fidelis serve` on SQLite (the same program and members as
/// on PostgreSQL), and the bare durable transaction on the same machine: one journal per
/// transaction, one connection (`fidelis bench bare-batch --batch 1`, the store's own
/// durability settings).
fn sqlite(bin: &Path, dir: &Path, o: &Options) -> Result<Sqlite> {
    let file = |name: &str| -> Result<String> {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("{name}{suffix}")));
        }
        Ok(format!(
            "sqlite://{}",
            dir.join(name).to_str().context("path")?
        ))
    };
    let url = file("api.db")?;
    crate::create_bench_program(bin, &url, dir, o.fraud, o.promotions)?;
    let out = Command::new(bin)
        .arg("--database")
        .arg(&url)
        .args(["members", "import", "--program", "bench"])
        .arg(dir.join("members.ndjson"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "members import on SQLite: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_serve, port) = serve(bin, &url)?;
    let script = dir.join("purchase-sqlite.lua");
    purchases_script(&script, o.members)?;
    // A durable commit's flush waits behind whatever else the disk is writing back (the
    // PostgreSQL runs just before leave plenty): settle it, then interleave the bare
    // runs with the API's, so that both sides of the ratio see the same disk.
    let _ = Command::new("sync").status();
    run_wrk(port, &script, 3, 8)?;
    let ladder = [1, 8];
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); ladder.len()];
    let mut bare = Vec::new();
    for run in 0..ROUNDS {
        for (i, connections) in ladder.into_iter().enumerate() {
            runs[i].push(figures(&run_wrk(port, &script, o.seconds, connections)?)?);
        }
        let out = Command::new(bin)
            .arg("--database")
            .arg(file(&format!("bare-{run}.db"))?)
            .args(["bench", "bare-batch", "--members"])
            .arg(o.members.to_string())
            .args(["--journals", "5000", "--batch", "1"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "the bare durable transaction on SQLite: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        bare.push(
            value["per_second"]
                .as_f64()
                .context("no per_second from bare-batch")?,
        );
    }
    let api = ladder
        .into_iter()
        .zip(runs)
        .map(|(connections, runs)| (connections, median(runs)))
        .collect();
    bare.sort_by(f64::total_cmp);
    Ok(Sqlite {
        api,
        bare: bare[bare.len() / 2],
    })
}

/// The administrator token the benchmark's servers are started with.
const TOKEN: &str = "bench-api-token-0123456789";

/// Starts `fidelis serve` on `url` (the administrator token [`TOKEN`], no rate limit) and
/// waits until it is ready; its port.
fn serve(bin: &Path, url: &str) -> Result<(Process, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let serve = Process(
        Command::new(bin)
            .arg("--database")
            .arg(url)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("FIDELIS_ADMIN_TOKEN", TOKEN)
            .env("FIDELIS_RATE_LIMIT", "10000000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/readyz")])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "fidelis serve did not become ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((serve, port))
}

/// Writes the wrk script of unique purchases for random members among `members`.
fn purchases_script(path: &Path, members: u32) -> Result<()> {
    let occurred_at = chrono_like_now_minus_minute();
    let token = TOKEN;
    std::fs::write(
        path,
        format!(
            r#"-- One unique purchase per request, for a random member.
{WRK_THREADS}function init(args)
  counter = 0
  prefix = "w" .. id .. "-" .. os.time()
  math.randomseed(os.time() + id)
end
function request()
  counter = counter + 1
  local cents = math.random(500, 25000)
  local body = string.format('{{"external_id":"%s-%d","member":"M%07d","type":"purchase","occurred_at":"{occurred_at}","amount":"%d.%02d","currency":"EUR"}}',
    prefix, counter, math.random(0, {members} - 1), math.floor(cents / 100), cents % 100)
  return wrk.format("POST", "/api/v1/programs/bench/journals",
    {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {token}"}}, body)
end
{WRK_DONE}"#,
            members = members
        ),
    )?;
    Ok(())
}

/// Runs wrk with `script` against the server on `port`; its output.
fn run_wrk(port: u16, script: &Path, seconds: u32, connections: u32) -> Result<String> {
    let out = Command::new("wrk")
        .args([
            "-t",
            &connections.clamp(1, 2).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "wrk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Rounds of the realtime measurements (purchases, holds, vouchers, interleaved).
const ROUNDS: usize = 3;

/// The connection counts the API and the bare one-statement journal are compared at.
const LADDER: [u32; 3] = [1, 8, 16];

/// The run with the median throughput (its latencies with it); failures of every run.
fn median(mut runs: Vec<Figures>) -> Figures {
    let failed = runs.iter().map(|r| r.failed).sum();
    runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    let mut m = runs.swap_remove(runs.len() / 2);
    m.failed = failed;
    m
}

/// Throughput, p50, p99 and failures from the `RESULT` line our wrk scripts print.
fn figures(output: &str) -> Result<Figures> {
    let line = output
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .context("no result from wrk")?;
    let n: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    anyhow::ensure!(n.len() == 5, "wrk result: {line}");
    Ok(Figures {
        per_second: n[0] / (n[1] / 1e6),
        p50_ms: n[2] / 1000.0,
        p99_ms: n[3] / 1000.0,
        failed: n[4] as u64,
    })
}

/// User + system CPU seconds a process has used, from `/proc` (0 where unavailable).
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) ends with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name
    // and state (the state is not numeric, so it was filtered out).
    fields
        .get(10)
        .zip(fields.get(11))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

/// Busy CPU seconds of the whole machine (all cores), from `/proc/stat`.
fn machine_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let total: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

/// An instant a minute ago in RFC 3339 (from `date`, to keep xtask free of a time crate).
fn chrono_like_now_minus_minute() -> String {
    Command::new("date")
        .args(["-u", "-d", "1 minute ago", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "2026-01-01T00:00:00Z".into())
}

/// Runs SQL through the server's own `psql` in database `db`.
fn psql(server: &PgServer, db: &str, sql: &str) -> Result<()> {
    psql_answer(server, db, sql).map(drop)
}

/// What `sql` answers, unaligned and without headers.
pub(crate) fn psql_answer(server: &PgServer, db: &str, sql: &str) -> Result<String> {
    let out = Command::new(server.bindir.join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "fidelis",
            "-d",
            db,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The bare side's tables: a balance row per member and a ledger.
fn bare_tables(server: &PgServer, o: &Options) -> Result<()> {
    server.create_database("bare").map_err(anyhow::Error::msg)?;
    let psql = |sql: &str| psql(server, "bare", sql);
    psql(&format!(
        "CREATE TABLE bare_balances (member_id BIGINT PRIMARY KEY, balance BIGINT NOT NULL) WITH (fillfactor = 80); \
         CREATE TABLE bare_ledger (id BIGSERIAL PRIMARY KEY, member_id BIGINT NOT NULL, amount BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL); \
         INSERT INTO bare_balances SELECT m, 0 FROM generate_series(0, {} - 1) AS m;",
        o.members
    ))?;
    psql("VACUUM ANALYZE bare_balances")?;
    Ok(())
}

/// The bare transaction: lock the member's balance row, insert a ledger entry, update the
/// balance, in `BEGIN … END`.
fn bare(server: &PgServer, dir: &Path, o: &Options) -> Result<Figures> {
    bare_tables(server, o)?;
    pgbench(
        server,
        dir,
        "bare",
        &format!(
            "\\set m random(0, {} - 1)\n\\set points random(5, 250)\nBEGIN;\n\
             SELECT balance FROM bare_balances WHERE member_id = :m FOR UPDATE;\n\
             INSERT INTO bare_ledger (member_id, amount, at) VALUES (:m, :points, now());\n\
             UPDATE bare_balances SET balance = balance + :points WHERE member_id = :m;\nEND;\n",
            o.members
        ),
        o.connections,
        o.seconds,
    )
}

/// The bare one-statement journal (issue #15's baseline, the least a durable journal can
/// cost): the balance updated and the ledger row inserted by one statement, its own
/// transaction.
fn bare_one_statement(
    server: &PgServer,
    dir: &Path,
    o: &Options,
    connections: u32,
) -> Result<Figures> {
    pgbench(
        server,
        dir,
        "bare-one",
        &format!(
            "\\set m random(0, {} - 1)\n\\set points random(5, 250)\n\
             WITH b AS (UPDATE bare_balances SET balance = balance + :points WHERE member_id = :m RETURNING member_id) \
             INSERT INTO bare_ledger (member_id, amount, at) SELECT member_id, :points, now() FROM b;\n",
            o.members
        ),
        connections,
        o.seconds,
    )
}

/// Runs `script` with pgbench (prepared statements, `connections` clients) for `seconds`
/// after a short warm-up; throughput, p50 and p99 from its per-transaction log.
fn pgbench(
    server: &PgServer,
    dir: &Path,
    name: &str,
    script: &str,
    connections: u32,
    seconds: u32,
) -> Result<Figures> {
    let file = dir.join(format!("{name}.sql"));
    std::fs::write(&file, script)?;
    let logs = dir.join("pgbench-logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let pgbench = |seconds: u32, log: bool| -> Result<String> {
        let mut cmd = Command::new(server.bindir.join("pgbench"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "fidelis",
            "-n",
            "-M",
            "prepared",
        ])
        .args([
            "-c",
            &connections.to_string(),
            "-j",
            &connections.clamp(1, 2).to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&file);
        if log {
            cmd.arg("--log")
                .arg(format!("--log-prefix={}", logs.join("tx").display()));
        }
        let out = cmd.arg("bare").output()?;
        anyhow::ensure!(
            out.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    pgbench(3, false)?;
    let all_before = machine_cpu_seconds();
    let output = pgbench(seconds, true)?;
    let all_cpu = machine_cpu_seconds() - all_before;
    let tps: f64 = output
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .context("no tps in pgbench's output")?;
    // Per-transaction logs: the third column is the latency in microseconds.
    let mut latencies: Vec<f64> = Vec::new();
    for entry in std::fs::read_dir(&logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        latencies.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok()),
        );
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
            / 1000.0
    };
    let failed = output
        .lines()
        .find(|l| l.contains("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    eprintln!(
        "xtask: CPU per {name} transaction ({connections} clients): {:.3} ms in all (PostgreSQL, pgbench, kernel)",
        all_cpu * 1e3 / (tps * f64::from(seconds))
    );
    Ok(Figures {
        per_second: tps,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        failed,
    })
}
