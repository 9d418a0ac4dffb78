//! Python tools the tests and benchmarks run (schemathesis, an SMTP server, `lifetimes`),
//! each set pinned in its own virtual environment under `target/`, installed once.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{root, run_cmd};

/// The `bin` directory of `target/<name>` with exactly `pins` installed (created, or
/// reinstalled when the pins changed).
pub fn venv(name: &str, pins: &[&str]) -> Result<PathBuf> {
    let venv = root().join("target").join(name);
    let bin = venv.join("bin");
    let marker = venv.join(".installed");
    let wanted = pins.join(" ");
    if std::fs::read_to_string(&marker).is_ok_and(|s| s == wanted) {
        return Ok(bin);
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .context("the tests need Python 3 (Debian: apt-get install python3 python3-venv)")?;
    eprintln!("xtask: installing {wanted} into {}", venv.display());
    if !bin.join("pip").exists() {
        run_cmd(Command::new(python).args(["-m", "venv"]).arg(&venv))
            .context("creating a Python venv (Debian: apt-get install python3-venv)")?;
    }
    run_cmd(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet"])
            .args(pins),
    )?;
    std::fs::write(&marker, wanted)?;
    Ok(bin)
}
