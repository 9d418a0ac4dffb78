//! Project automation: `cargo xtask test` (the whole test suite, with everything it needs
//! installed or started) and `cargo xtask bench-import` (the end-to-end import benchmark).

mod bench;
mod bench_api;
mod bench_churn;
mod bench_members;
mod bench_money;
mod faults;
mod python;
mod schemathesis;
mod soak;
mod test;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("bench-import") => bench::run(&args[1..]),
        Some("bench-api") => bench_api::run(&args[1..]),
        Some("bench-members") => bench_members::run(&args[1..]),
        Some("bench-pages") => bench_members::run_pages(&args[1..]),
        Some("bench-money") => bench_money::run(&args[1..]),
        Some("bench-churn") => bench_churn::run(&args[1..]),
        Some("faults") => faults::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("schemathesis") => match args.get(1).map(|s| s.parse::<u32>()) {
            None => schemathesis::run_standalone(schemathesis::BUDGET_SECONDS),
            Some(Ok(seconds)) => schemathesis::run_standalone(seconds),
            Some(Err(_)) => Err(anyhow::anyhow!("cargo xtask schemathesis [SECONDS]")),
        },
        _ => {
            eprintln!(
                "usage:\n  cargo xtask test [-- NEXTEST ARGS]   run every test (installs PostgreSQL if it can)\n  \
                 cargo xtask bench-import [--journals N] [--members N] [--runs N] [--databases sqlite,postgres] [--promotions shipped|none|200] [--order file|member] [--bin FIDELIS]\n  \
                 cargo xtask bench-api [--seconds N] [--connections N] [--members N] [--fraud on|off] [--promotions shipped|none|200] [--bin FIDELIS]\n  \
                 cargo xtask bench-members [--members N] [--queries N] [--databases sqlite,postgres]   member search and lists on a large program\n  \
                 cargo xtask bench-pages [--members N] [--journals N] [--queries N] [--databases sqlite,postgres]   the console's pages on a large program\n  \
                 cargo xtask bench-money [--members N] [--journals N] [--runs N] [--databases postgres,sqlite | --url DATABASE_URL] [--bin FIDELIS]   settlement statements and liability on a large program\n  \
                 cargo xtask bench-churn [--members N] [--runs N] [--databases sqlite,postgres] [--bin FIDELIS]   churn models: CDNOW fit against Python lifetimes; a large population fitted and scored\n  \
                 cargo xtask faults [--quick] [--release] [--databases sqlite,postgres]   kill, stop, freeze, fill the disk under load; audit every journal\n  \
                 cargo xtask soak [--minutes N] [--members N] [--clients N]   mixed realtime traffic on PostgreSQL with a restart: flat memory, balances = entries\n  \
                 cargo xtask schemathesis [SECONDS]     the API contract: validator, schemathesis (every check, three tokens), generated client; both databases"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a command in the workspace root, failing if it fails.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.current_dir(root()).status()?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// Whether this process runs as root (and so may install Debian packages).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn on_path(program: &str) -> bool {
    Command::new("which")
        .arg(program)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs Debian packages when this process may (root, with apt-get), saying why first.
/// Answers whether it installed them; `false` when it may not.
fn apt_install(why: &str, packages: &[&str]) -> anyhow::Result<bool> {
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        return Ok(false);
    }
    eprintln!(
        "xtask: {why}; installing Debian's packages (apt-get install {})…",
        packages.join(" ")
    );
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let _ = Command::new("apt-get")
        .arg("update")
        .arg("-q")
        .envs(env)
        .status();
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .envs(env)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "apt-get install {} failed",
        packages.join(" ")
    );
    Ok(true)
}

/// Makes sure Chromium, its WebDriver and a Japanese font (for the portal's screenshots)
/// are installed for the browser tests: installs Debian's packages when running as root
/// with apt-get, or stops with instructions.
pub fn ensure_chromium() -> anyhow::Result<()> {
    let font = std::path::Path::new("/usr/share/fonts/opentype/ipafont-gothic").exists()
        || std::path::Path::new("/usr/share/fonts/opentype/noto").exists();
    if (on_path("chromium") || on_path("google-chrome")) && on_path("chromedriver") && font {
        return Ok(());
    }
    if apt_install(
        "the browser tests need Chromium",
        &["chromium", "chromium-driver", "fonts-ipafont-gothic"],
    )? {
        return Ok(());
    }
    anyhow::bail!(
        "the browser tests need Chromium and its driver: install them (Debian/Ubuntu: sudo apt-get install chromium chromium-driver fonts-ipafont-gothic)"
    )
}

/// Makes sure `nats-server` (the events-on-NATS tests start one with JetStream) is
/// installed: installs Debian's package when running as root with apt-get, or stops with
/// instructions. Debian puts it in /usr/sbin, which a user's PATH may lack.
pub fn ensure_nats() -> anyhow::Result<()> {
    let present =
        || on_path("nats-server") || std::path::Path::new("/usr/sbin/nats-server").is_file();
    if present() {
        return Ok(());
    }
    if apt_install(
        "the events-on-NATS tests need nats-server",
        &["nats-server"],
    )? && present()
    {
        return Ok(());
    }
    anyhow::bail!(
        "the events-on-NATS tests need nats-server: install it (Debian/Ubuntu: sudo apt-get install nats-server)"
    )
}

/// Makes sure PostgreSQL's server binaries are installed: installs Debian's package when
/// running as root with apt-get, or stops with instructions.
pub fn ensure_postgres() -> anyhow::Result<()> {
    if fidelis_testkit::find_bindir().is_ok() {
        return Ok(());
    }
    if apt_install(
        "PostgreSQL is not installed",
        &["postgresql", "postgresql-contrib"],
    )? {
        return fidelis_testkit::find_bindir()
            .map(|_| ())
            .map_err(anyhow::Error::msg);
    }
    anyhow::bail!(
        "{}\nInstall PostgreSQL's server (Debian/Ubuntu: sudo apt-get install postgresql), or set PG_BINDIR to its bin directory.",
        fidelis_testkit::find_bindir().unwrap_err()
    )
}

/// Which promotions the end-to-end benchmarks' program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPromotions {
    /// The retail template's, as shipped (the default: what operators run).
    Shipped,
    /// None: the ledger alone (base earning and tiers).
    None,
    /// The shipped ones and generated ones, 200 active in all.
    Many,
}

impl BenchPromotions {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "shipped" => Self::Shipped,
            "none" => Self::None,
            "200" | "many" => Self::Many,
            _ => anyhow::bail!("--promotions is shipped, none or 200"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Shipped => "as shipped",
            Self::None => "none",
            Self::Many => "200 active",
        }
    }
}

/// Promotions a large program might run beside the template's: thresholds on the amount
/// (some capped daily, so their counters are written), big baskets on a weekday, and offers
/// for the top tier — every one evaluated for every purchase, about three awarding on
/// average (the benches' purchases are 5 to 205 euros), as in a real catalogue of offers.
fn generated_promotions(count: usize) -> Vec<serde_json::Value> {
    (0..count)
        .map(|i| match i % 3 {
            0 => {
                let mut p = serde_json::json!({
                    "code": format!("bench-threshold-{i}"), "name": format!("Spend {} or more", 150 + i),
                    "status": "active", "condition": format!("journal.amount >= {}.0", 150 + i),
                    "actions": [{"type": "fixed", "currency": "points", "points": 5}]});
                if i % 6 == 0 {
                    p["limits"] = serde_json::json!({"daily_points": 1_000_000_000});
                }
                p
            }
            1 => serde_json::json!({
                "code": format!("bench-weekday-{i}"), "name": format!("Weekday {}", 1 + i % 7),
                "status": "active", "condition": format!("local.weekday == {} && journal.amount >= 190.0", 1 + i % 7),
                "actions": [{"type": "fixed", "currency": "points", "points": 3}]}),
            _ => serde_json::json!({
                "code": format!("bench-gold-{i}"), "name": format!("Gold offer {i}"),
                "status": "active", "condition": format!("member.tier == 'gold' && journal.amount >= {}.0", 100 + i),
                "actions": [{"type": "fixed", "currency": "points", "points": 7}]}),
        })
        .collect()
}

/// Creates program `bench` in the database at `url` from the `retail` template: its
/// tiers, benefits and, by `promotions`, its promotions as shipped, none, or 200 active;
/// without its fraud rules unless `fraud`.
pub fn create_bench_program(
    bin: &std::path::Path,
    url: &str,
    dir: &std::path::Path,
    fraud: bool,
    promotions: BenchPromotions,
) -> anyhow::Result<()> {
    let fidelis = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new(bin)
            .arg("--database")
            .arg(url)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "fidelis {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    };
    fidelis(&["program", "create", "bench", "--template", "retail"])?;
    let mut document: serde_json::Value =
        serde_json::from_slice(&fidelis(&["program", "show", "bench", "--format", "json"])?)?;
    if let Some(fields) = document.as_object_mut() {
        match promotions {
            BenchPromotions::Shipped => {}
            BenchPromotions::None => {
                fields.remove("promotions");
            }
            BenchPromotions::Many => {
                if let Some(list) = fields
                    .get_mut("promotions")
                    .and_then(serde_json::Value::as_array_mut)
                {
                    let extra = 200usize.saturating_sub(list.len());
                    list.extend(generated_promotions(extra));
                }
            }
        }
        if !fraud {
            fields.remove("fraud");
        }
    }
    let file = dir.join("bench-program.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document)?)?;
    let file = file
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("a UTF-8 path"))?;
    fidelis(&["program", "apply", file])?;
    Ok(())
}
