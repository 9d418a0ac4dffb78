//! The API as integrators meet it, against a live `fidelis serve` on each database:
//!
//! 1. a strict validator (openapi-spec-validator) accepts the served OpenAPI document;
//! 2. schemathesis runs every check it has, positive and negative data, with an admin, a
//!    member and a partner token (the hooks allow-list business-rule refusals, each with
//!    its reason: `xtask/schemathesis_hooks.py`);
//! 3. a client generated from the document by openapi-python-client runs an end-to-end
//!    scenario (`xtask/client_scenario.py`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fidelis_testkit::{PgOptions, PgServer};

use crate::{root, run_cmd};

/// The versions the test command installs (pinned: a new release must not change a passing
/// suite into a failing one unannounced).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// The strict OpenAPI validator the served document must pass.
const SPEC_VALIDATOR: &str = "openapi-spec-validator==0.9.0";
/// The client generator: widely used, runs without a JVM.
const CLIENT_GENERATOR: &str = "openapi-python-client==0.29.1";
/// Seconds of schemathesis per database in the test command, shared by the three tokens.
pub const BUDGET_SECONDS: u32 = 90;
/// The test command's seed: CI explores the same cases each run, so a red run is a change's
/// doing and reproducible (`cargo xtask schemathesis` explores with a fresh seed each time).
pub const TEST_SEED: u64 = 20_261_202;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The virtual environment with the Python tools, created on first use in `target/`;
/// returns its `bin` directory.
fn venv() -> Result<PathBuf> {
    crate::python::venv(
        "schemathesis-venv",
        &[SCHEMATHESIS, SPEC_VALIDATOR, CLIENT_GENERATOR],
    )
}

/// `cargo xtask schemathesis [SECONDS]`: its own PostgreSQL.
pub fn run_standalone(budget_seconds: u32) -> Result<()> {
    crate::ensure_postgres()?;
    let pg = PgServer::start(PgOptions {
        durable: false,
        watchdog: true,
    })
    .map_err(anyhow::Error::msg)?;
    let result = run(budget_seconds, &pg, None);
    pg.stop();
    result
}

/// Everything above on SQLite, then on a database of `pg`; with `seed`, schemathesis
/// generates the same cases each run.
pub fn run(budget_seconds: u32, pg: &PgServer, seed: Option<u64>) -> Result<()> {
    let bin = venv()?;
    let python = bin.join("python");
    run_cmd(Command::new("cargo").args(["build", "--quiet", "-p", "fidelis"]))?;
    run_cmd(Command::new(&python).arg("xtask/schemathesis_hooks.py"))
        .context("the schemathesis hooks' self-test")?;
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("fidelis.db").display());
    let postgres = pg
        .create_database(&format!("contract_{}", std::process::id()))
        .map_err(anyhow::Error::msg)?;
    let mut client = None;
    for (name, url) in [("SQLite", sqlite), ("PostgreSQL", postgres)] {
        eprintln!("xtask: the API contract on {name}");
        let (_server, base, admin) = serve(&url)?;
        if client.is_none() {
            validate(&python, &base)?;
            client = Some(generate_client(&bin, &base, dir.path())?);
        }
        let (member, partner) = tokens(&base, &admin)?;
        // The admin sees every operation; the member and partner tokens chiefly meet
        // refusals, which need fewer cases to cover.
        let shares = [
            ("admin", &admin, 3),
            ("member", &member, 1),
            ("partner", &partner, 1),
        ];
        for (who, token, share) in shares {
            let seconds = (budget_seconds * share / 5).max(5);
            fuzz(&bin, &base, who, token, seconds, seed)
                .with_context(|| format!("schemathesis with the {who} token on {name}"))?;
        }
        if let Some(client) = &client {
            scenario(&python, client, &base, &admin)
                .with_context(|| format!("the generated client's scenario on {name}"))?;
        }
    }
    Ok(())
}

/// Starts `fidelis serve --demo` on `database`; returns it, its base URL and admin token.
fn serve(database: &str) -> Result<(Server, String, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let token = format!("contract-admin-{}-{port}-token", std::process::id());
    let server = Server(
        Command::new(root().join("target/debug/fidelis"))
            .arg("--database")
            .arg(database)
            .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
            .env("FIDELIS_ADMIN_TOKEN", &token)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .context("starting fidelis serve")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(port) {
        if Instant::now() > deadline {
            bail!("fidelis serve did not become ready on {base}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((server, base, token))
}

fn validate(python: &Path, base: &str) -> Result<()> {
    eprintln!("xtask: {SPEC_VALIDATOR} on {base}/openapi.json");
    run_cmd(Command::new(python).args([
        "-c",
        "import json, sys, urllib.request\n\
         from openapi_spec_validator import validate\n\
         validate(json.load(urllib.request.urlopen(sys.argv[1])))\n\
         print('the OpenAPI document is valid')",
        &format!("{base}/openapi.json"),
    ]))
    .context("the OpenAPI document is not valid OpenAPI 3.1")
}

/// A member token and a partner token of the demo program, made with the admin token.
fn tokens(base: &str, admin: &str) -> Result<(String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let post = |path: &str, body: serde_json::Value| {
            http.post(format!("{base}/api/v1{path}"))
                .bearer_auth(admin)
                .json(&body)
                .send()
        };
        let enrolled = post(
            "/programs/demo/members",
            serde_json::json!({"member": "contract-member"}),
        )
        .await?;
        anyhow::ensure!(
            enrolled.status().is_success() || enrolled.status() == 409,
            "enrolling the member the member token acts for: {}",
            enrolled.status()
        );
        let mut made = Vec::new();
        for body in [
            serde_json::json!({"name": "contract member", "role": "member", "program": "demo", "member": "contract-member"}),
            serde_json::json!({"name": "contract partner", "role": "partner", "program": "demo", "partner": "contract-partner"}),
        ] {
            let answer = post("/tokens", body).await?;
            anyhow::ensure!(answer.status() == 201, "creating a token: {}", answer.status());
            let created: serde_json::Value = answer.json().await?;
            made.push(
                created["token"]
                    .as_str()
                    .context("a created token answers its token")?
                    .to_owned(),
            );
        }
        Ok((made[0].clone(), made[1].clone()))
    })
}

fn fuzz(
    bin: &Path,
    base: &str,
    who: &str,
    token: &str,
    seconds: u32,
    seed: Option<u64>,
) -> Result<()> {
    eprintln!("xtask: schemathesis, every check, {who} token, {seconds} s");
    let mut st = Command::new(bin.join("st"));
    st.args(["run", &format!("{base}/openapi.json")]);
    if let Some(seed) = seed {
        st.args(["--seed", &seed.to_string()]);
    }
    let status = st
        .args(["--checks", "all"])
        .args([
            "--exclude-checks",
            "positive_data_acceptance,negative_data_rejection",
        ])
        .args(["--mode", "all"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // One worker: schemathesis' threads share Hypothesis caches that are not thread-safe
        // (seen as a KeyError in Hypothesis' lambda descriptions), and generation is bound
        // by Python's GIL anyway.
        .args(["--max-time", &seconds.to_string(), "--workers", "1"])
        .args(["--no-color", "--generation-database", "none"])
        .current_dir(root().join("xtask"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .status()?;
    anyhow::ensure!(
        status.success(),
        "schemathesis found answers that break the OpenAPI document or its checks"
    );
    Ok(())
}

/// Generates the Python client from the served document into `dir`; returns the directory
/// holding its package.
fn generate_client(bin: &Path, base: &str, dir: &Path) -> Result<PathBuf> {
    eprintln!("xtask: {CLIENT_GENERATOR} from {base}/openapi.json");
    let config = dir.join("client-config.yaml");
    std::fs::write(
        &config,
        // Literal enums: the time zones GMT0, GMT-0 and GMT+0 would be one Python enum key.
        // NDJSON and YAML bodies are sent as bytes (the generator has no serializer for them).
        "project_name_override: fidelis-client\n\
         package_name_override: fidelis_client\n\
         literal_enums: true\n\
         content_type_overrides:\n  \
         application/x-ndjson: application/octet-stream\n  \
         application/yaml: application/octet-stream\n",
    )?;
    let out = dir.join("fidelis_client");
    let output = Command::new(bin.join("openapi-python-client"))
        .args(["generate", "--url", &format!("{base}/openapi.json")])
        .arg("--config")
        .arg(&config)
        .arg("--output-path")
        .arg(&out)
        .args(["--overwrite", "--meta", "none", "--fail-on-warning"])
        .env("PATH", path_with(bin))
        .output()?;
    // It reports what it could not express as warnings; --fail-on-warning makes any of
    // them an error: the document must be fixed, not the client.
    if !output.status.success() {
        bail!(
            "openapi-python-client could not generate a client:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(out)
}

fn scenario(python: &Path, client: &Path, base: &str, admin: &str) -> Result<()> {
    eprintln!("xtask: the generated client's scenario against {base}");
    run_cmd(
        Command::new(python)
            .arg("xtask/client_scenario.py")
            .arg(base)
            .env("FIDELIS_TOKEN", admin)
            .env("PYTHONPATH", client.parent().unwrap_or(client)),
    )
}

/// `PATH` with the venv's `bin` first (the generator runs its formatter from there).
fn path_with(bin: &Path) -> String {
    match std::env::var("PATH") {
        Ok(path) => format!("{}:{path}", bin.display()),
        Err(_) => bin.display().to_string(),
    }
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}
