//! Schemathesis against a live `fidelis serve`: generated requests from the OpenAPI
//! document, checking that no answer is a server error or violates the document.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{root, run_cmd};

/// The version the test command installs (pinned: a new release must not change a
/// passing suite into a failing one unannounced).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// The strict OpenAPI validator the served document must pass (pinned likewise).
const SPEC_VALIDATOR: &str = "openapi-spec-validator==0.9.0";
/// How long schemathesis generates requests in the test command.
pub const BUDGET_SECONDS: u32 = 60;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The virtual environment with schemathesis, created on first use in `target/`.
fn venv() -> Result<PathBuf> {
    let venv = root().join("target/schemathesis-venv");
    let st = venv.join("bin/st");
    let validator = venv.join("bin/openapi-spec-validator");
    if st.exists() && validator.exists() {
        return Ok(st);
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .context("schemathesis needs Python 3 (Debian: apt-get install python3 python3-venv)")?;
    eprintln!("xtask: installing {SCHEMATHESIS} into {}", venv.display());
    if !venv.join("bin/pip").exists() {
        run_cmd(Command::new(python).args(["-m", "venv"]).arg(&venv))
            .context("creating a Python venv (Debian: apt-get install python3-venv)")?;
    }
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        SCHEMATHESIS,
        SPEC_VALIDATOR,
    ]))?;
    Ok(st)
}

pub fn run(budget_seconds: u32) -> Result<()> {
    let st = venv()?;
    run_cmd(Command::new("cargo").args(["build", "--quiet", "-p", "fidelis"]))?;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let token = format!("schemathesis-admin-{}-{port}", std::process::id());
    let _server = Server(
        Command::new(root().join("target/debug/fidelis"))
            .arg("--database")
            .arg(format!(
                "sqlite://{}",
                dir.path().join("fidelis.db").display()
            ))
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
    let python = st.with_file_name("python");
    run_cmd(Command::new(&python).arg("xtask/schemathesis_hooks.py"))
        .context("the schemathesis hooks' self-test")?;
    eprintln!("xtask: {SPEC_VALIDATOR} on {base}/openapi.json");
    run_cmd(Command::new(&python).args([
        "-c",
        "import json, sys, urllib.request\n\
         from openapi_spec_validator import validate\n\
         validate(json.load(urllib.request.urlopen(sys.argv[1])))\n\
         print('the OpenAPI document is valid')",
        &format!("{base}/openapi.json"),
    ]))
    .context("the OpenAPI document is not valid OpenAPI 3.1")?;
    eprintln!("xtask: schemathesis against {base}/openapi.json for {budget_seconds} s");
    let status = Command::new(st)
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-time", &budget_seconds.to_string(), "--workers", "2"])
        .current_dir(root().join("xtask"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .status()?;
    anyhow::ensure!(
        status.success(),
        "schemathesis found server errors or answers that violate the OpenAPI document"
    );
    Ok(())
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
