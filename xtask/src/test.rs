//! `cargo xtask test`: the README's test command. Installs or starts what the tests need,
//! then runs every test of the workspace.

use std::process::Command;

use anyhow::Result;
use fidelis_testkit::{PgOptions, PgServer, SHARED_SERVER_ENV};

use crate::{ensure_postgres, run_cmd};

/// The SMTP server the e-mail tests deliver to.
const AIOSMTPD: &str = "aiosmtpd==1.4.6";

pub fn run(extra: &[String]) -> Result<()> {
    ensure_postgres()?;
    crate::ensure_chromium()?;
    crate::ensure_nats()?;
    // One throw-away server for the whole run; each test creates its own database in it.
    let server = PgServer::start(PgOptions {
        durable: false,
        watchdog: true,
    })
    .map_err(anyhow::Error::msg)?;
    eprintln!("xtask: PostgreSQL for the tests at {}", server.base_url);
    let result = run_suites(&server, extra);
    server.stop();
    result
}

fn run_suites(server: &PgServer, extra: &[String]) -> Result<()> {
    // The code is formatted as rustfmt formats it: checked first, it fails in seconds.
    let rustfmt = Command::new("cargo")
        .args(["fmt", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    anyhow::ensure!(
        rustfmt,
        "rustfmt is missing: install it with `rustup component add rustfmt`"
    );
    run_cmd(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))
        .map_err(|e| anyhow::anyhow!("{e}: run `cargo fmt --all` and commit the result"))?;
    // The benchmarks are not run here, but they must build: a change to a core type once
    // broke one unnoticed.
    run_cmd(Command::new("cargo").args(["check", "--workspace", "--benches", "--quiet"]))?;
    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut tests = Command::new("cargo");
    if nextest {
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        tests.args(["test", "--workspace", "--no-fail-fast"]);
    }
    // The e-mail tests' SMTP server (aiosmtpd), a real one on loopback.
    let python = crate::python::venv("test-venv", &[AIOSMTPD])?.join("python");
    tests
        .args(extra)
        .env(SHARED_SERVER_ENV, &server.base_url)
        .env("FIDELIS_TEST_PYTHON", &python);
    run_cmd(&mut tests)?;
    if nextest {
        // nextest does not run documentation tests.
        run_cmd(Command::new("cargo").args(["test", "--workspace", "--doc"]))?;
    }
    // The API contract on both databases: a strict validator, schemathesis with every
    // check and three tokens, and a generated client's scenario.
    crate::schemathesis::run(
        crate::schemathesis::BUDGET_SECONDS,
        server,
        Some(crate::schemathesis::TEST_SEED),
    )?;
    // The short fault-injection run: SIGKILLs, a full disk, a stopped and a frozen
    // PostgreSQL under load, then every journal audited (`cargo xtask faults` runs longer).
    crate::faults::run(&["--quick".to_owned()])
}
