//! `fidelis`: the command line of the Fidelis loyalty platform.
//!
//! The binary is glue: it parses arguments and files, shows progress, and calls the store
//! (`fidelis-store`) and the core (`fidelis-core`). No loyalty rule lives here.

mod cli;

/// glibc's allocator spent a fifth of an import's time in malloc and free (many small,
/// short-lived allocations across threads); mimalloc handles that pattern far better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fidelis: loyalty programs, points ledger, promotions.
#[derive(Debug, Parser)]
#[command(name = "fidelis", version, about, propagate_version = true)]
struct Args {
    /// The database: sqlite://PATH (created if missing) or postgres://USER@HOST:PORT/DB.
    #[arg(
        long,
        global = true,
        env = "FIDELIS_DATABASE_URL",
        default_value = "sqlite://fidelis.db"
    )]
    database: String,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: cli::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API (and, later, the portal and console).
    Serve(cli::serve::ServeArgs),
    /// Create, change and inspect programs.
    #[command(subcommand)]
    Program(cli::program::ProgramCommand),
    /// Enroll and manage members.
    #[command(subcommand)]
    Members(cli::members::MembersCommand),
    /// Import journals (purchases, refunds, redemptions…) from files.
    #[command(subcommand)]
    Journals(cli::import::JournalsCommand),
    /// Run the time-driven jobs (expiry, pending release).
    #[command(subcommand)]
    Jobs(cli::jobs::JobsCommand),
    /// The reward catalog: import items, list them.
    #[command(subcommand)]
    Catalog(cli::catalog::CatalogCommand),
    /// Issue vouchers in bulk.
    #[command(subcommand)]
    Vouchers(cli::vouchers::VouchersCommand),
    /// A member's balances and expiry schedule.
    Balance(cli::balance::BalanceArgs),
    /// A partner's settlement statement for a period (JSON or CSV); `--close` closes it.
    Settlement(cli::settlement::SettlementArgs),
    /// The points liability as of an instant, with expected breakage (JSON).
    Liability(cli::liability::LiabilityArgs),
    /// Run a synthetic population through a program definition (no database): points,
    /// liability, costs, tiers; `--compare` a second definition.
    Simulate(cli::simulate::SimulateArgs),
    /// Models of the members fitted on the program's history: churn risk, lifetime value.
    #[command(subcommand)]
    Analytics(cli::analytics::AnalyticsCommand),
    /// Measurements for the benchmarks (not for operators).
    #[command(subcommand, hide = true)]
    Bench(cli::bench::BenchCommand),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let default_level = if matches!(args.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    cli::init_logging(args.log_format, default_level);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Command::Serve(serve) = &args.command
        && let Some(threads) = serve.runtime_threads(&args.database)
    {
        builder.worker_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Command::Serve(a) => cli::serve::run(&args.database, a).await,
            Command::Program(c) => cli::program::run(&args.database, c).await,
            Command::Members(c) => cli::members::run(&args.database, c).await,
            Command::Journals(c) => cli::import::run(&args.database, c).await,
            Command::Jobs(c) => cli::jobs::run(&args.database, c).await,
            Command::Catalog(c) => cli::catalog::run(&args.database, c).await,
            Command::Vouchers(c) => cli::vouchers::run(&args.database, c).await,
            Command::Balance(a) => cli::balance::run(&args.database, a).await,
            Command::Settlement(a) => cli::settlement::run(&args.database, a).await,
            Command::Liability(a) => cli::liability::run(&args.database, a).await,
            Command::Simulate(a) => cli::simulate::run(a).await,
            Command::Analytics(c) => cli::analytics::run(&args.database, c).await,
            Command::Bench(c) => cli::bench::run(&args.database, c).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
