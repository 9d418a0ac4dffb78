//! `fidelis serve`: the HTTP API on the database, with the bootstrap admin token and the
//! optional living demo.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;
use fidelis_store::{Actor, NewToken};
use fidelis_web::{AppState, ServerConfig, auth};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long, env = "FIDELIS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// On an empty database, create the `demo` program with members and months of history;
    /// at every start, print a fresh password for the demo administrator and a one-time
    /// portal link for a demo member.
    #[arg(long)]
    demo: bool,
    /// The demo's industry template: `retail` (the default), `airline`, `hotel` or `coffee`
    /// (its history takes that industry's shape: flights by cabin, stays by the night…).
    #[arg(long, default_value = "retail", requires = "demo")]
    template: String,
    /// Mark the pages' cookies `Secure` (set this when users reach the server over HTTPS;
    /// behind a proxy sending `X-Forwarded-Proto: https` they are marked anyway).
    #[arg(long, env = "FIDELIS_SECURE_COOKIES")]
    secure_cookies: bool,
    /// Requests per second allowed per token.
    #[arg(long, env = "FIDELIS_RATE_LIMIT", default_value_t = 2_000)]
    rate_limit: u64,
    /// Largest JSON body, in KiB.
    #[arg(long, default_value_t = 1_024)]
    body_limit_kib: usize,
    /// Realtime journals are committed in groups: how many group transactions may be in
    /// flight at once (PostgreSQL; SQLite has one writer).
    #[arg(long, env = "FIDELIS_COMMITTERS", default_value_t = fidelis_store::DEFAULT_COMMITTERS as u16,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    committers: u16,
    /// Threads running requests. By default one on SQLite, whose journals all go
    /// through one writer and its connection's own thread: a second runtime thread
    /// there only adds hand-offs between threads (measured: a fifth fewer purchases per
    /// second at one connection, no gain at eight). On PostgreSQL, one per core.
    /// Password hashing and the churn model's fit run on blocking threads either way.
    #[arg(long, env = "FIDELIS_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Longest a request may take, in seconds. A request cut by it answers 503 with code
    /// `timeout`: its outcome is unknown, and retrying with the same `external_id` is safe.
    #[arg(long, env = "FIDELIS_REQUEST_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_timeout_secs: u64,
    /// Longest a client may take to send a request's head (and, on a kept-alive
    /// connection, to start the next request), in seconds; then the connection is closed.
    #[arg(long, env = "FIDELIS_HEADER_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    header_timeout_secs: u64,
    /// Most connections open at once; at the cap a new connection closes the oldest idle
    /// one. Default: what the file-descriptor limit allows, less a reserve, at most 4096.
    #[arg(long, env = "FIDELIS_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    max_connections: Option<u32>,
    /// Attempts at delivering an event to a webhook before the delivery is dead (listed,
    /// replayable).
    #[arg(long, env = "FIDELIS_WEBHOOK_ATTEMPTS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    webhook_attempts: u32,
    /// The first retry's delay in milliseconds; each next one doubles (up to six hours),
    /// drawn between half of it and all of it.
    #[arg(long, env = "FIDELIS_WEBHOOK_BACKOFF_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    webhook_backoff_ms: u64,
    /// Seconds a delivery being sent is this server's: past it (the server died
    /// mid-send), another server, or this one restarted, sends it again.
    #[arg(long, env = "FIDELIS_WEBHOOK_LEASE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(2..=3_600))]
    webhook_lease_secs: u64,
    /// Deliver webhooks (and test sends) only to public addresses: loopback, private,
    /// link-local and other non-routable addresses are refused, by address and by what a
    /// name resolves to (SSRF). Off by default, so a receiver on this machine works.
    #[arg(long, env = "FIDELIS_WEBHOOKS_PUBLIC_ONLY")]
    webhooks_public_only: bool,
    /// The SMTP server members' e-mail goes through: `smtp://host:25` (no TLS, a relay on
    /// this machine), `smtp://user:password@host:587?tls=required` (STARTTLS) or
    /// `smtps://user:password@host` (TLS). No e-mail is sent without it.
    #[arg(long, env = "FIDELIS_SMTP_URL")]
    smtp_url: Option<String>,
    /// Publish every event of the outbox to NATS JetStream: `nats://host:4222` (or
    /// `tls://…`). The stream (`--events-stream`, created when missing, subjects
    /// `fidelis.>`) gets each event once, as `fidelis.{program}.{type}` with the event id
    /// as `Nats-Msg-Id`, in order per member; one server publishes at a time.
    #[arg(long = "events", env = "FIDELIS_EVENTS", value_name = "URL",
          value_parser = nats_url)]
    events: Option<String>,
    /// The JetStream stream `--events` publishes to.
    #[arg(long, env = "FIDELIS_EVENTS_STREAM", default_value = "FIDELIS",
          value_parser = stream_name)]
    events_stream: String,
    /// Seconds the publishing server holds its lease without renewing it: past it (the
    /// server died), another server publishes. Under the stream's duplicate window (ten
    /// minutes), so what the first published again is dropped as a duplicate.
    #[arg(long, env = "FIDELIS_EVENTS_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(2..=300))]
    events_lease_secs: u64,
    /// A hot standby of the PostgreSQL primary for the reports (dashboard, liability,
    /// promotion analytics, ledger history): read from while it lags by at most
    /// `--read-max-lag-secs`, from the primary otherwise.
    #[arg(long, env = "FIDELIS_READ_DATABASE_URL", value_name = "URL")]
    read_database: Option<String>,
    /// The most a read replica may lag before the reports read from the primary.
    #[arg(long, env = "FIDELIS_READ_MAX_LAG_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    read_max_lag_secs: u64,
    /// The sender of members' e-mail.
    #[arg(
        long,
        env = "FIDELIS_MAIL_FROM",
        default_value = "Fidelis <noreply@localhost>"
    )]
    mail_from: String,
}

/// The shortest `FIDELIS_ADMIN_TOKEN` accepted: it grants everything.
const MIN_ADMIN_TOKEN_CHARS: usize = 24;

/// With `FIDELIS_ADMIN_TOKEN` unset, the bootstrap token it once created stops working:
/// it is revoked (audited). Answers whether a live admin token remains, so that a
/// deployment is never left without one (a new one is then created and printed).
async fn retire_bootstrap(store: &fidelis_store::Store) -> Result<bool> {
    let actor = Actor {
        name: "serve".into(),
        role: "admin".into(),
    };
    let tokens = store.tokens().await?;
    for token in tokens
        .iter()
        .filter(|t| t.name == fidelis_web::BOOTSTRAP_TOKEN && !t.revoked)
    {
        let mut audit = actor.entry(
            Utc::now(),
            "token.revoke",
            None,
            Some(&token.id.to_string()),
        );
        audit.after = Some(serde_json::json!({"reason": "FIDELIS_ADMIN_TOKEN is unset"}));
        store.revoke_token(token.id, &audit).await?;
        eprintln!("FIDELIS_ADMIN_TOKEN is unset: its bootstrap token is revoked");
    }
    Ok(tokens.iter().any(|t| {
        !t.revoked
            && t.name != fidelis_web::BOOTSTRAP_TOKEN
            && t.role == "admin"
            && t.program.is_none()
            && t.scopes.is_none()
    }))
}

impl ServeArgs {
    /// How many threads the runtime serving `database` should have (see `--threads`);
    /// `None`: one per core.
    pub fn runtime_threads(&self, database: &str) -> Option<usize> {
        match self.threads {
            Some(n) => Some(n.into()),
            None if database.starts_with("sqlite:") => Some(1),
            None => None,
        }
    }
}

pub async fn run(database: &str, args: ServeArgs) -> Result<ExitCode> {
    let mut store = fidelis_store::Store::connect_with(
        database,
        fidelis_store::ConnectOptions {
            committers: usize::from(args.committers),
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("opening the database {database}"))?;
    if let Some(url) = &args.read_database {
        store
            .attach_replica(url, std::time::Duration::from_secs(args.read_max_lag_secs))
            .await
            .context("opening the read database")?;
    }
    let admin_token = match std::env::var("FIDELIS_ADMIN_TOKEN") {
        Ok(token)
            if token.trim().chars().count() < MIN_ADMIN_TOKEN_CHARS && !token.trim().is_empty() =>
        {
            anyhow::bail!(
                "FIDELIS_ADMIN_TOKEN has {} characters; it grants everything, so it needs at least \
                 {MIN_ADMIN_TOKEN_CHARS} (e.g. `openssl rand -base64 32`)",
                token.trim().chars().count()
            );
        }
        Ok(token) if !token.trim().is_empty() => {
            store
                .ensure_token(
                    fidelis_web::BOOTSTRAP_TOKEN,
                    &auth::token_hash(token.trim()),
                    "admin",
                    Utc::now(),
                )
                .await?;
            None
        }
        _ if !store.has_tokens().await? || !retire_bootstrap(&store).await? => {
            let token = auth::new_token();
            let new = NewToken {
                name: "initial-admin".into(),
                token_hash: auth::token_hash(&token),
                role: "admin".into(),
                program: None,
                partner: None,
                member: None,
                scopes: None,
            };
            store
                .create_token(
                    &new,
                    &Actor {
                        name: "serve".into(),
                        role: "admin".into(),
                    }
                    .entry(
                        Utc::now(),
                        "token.create",
                        None,
                        Some("initial-admin"),
                    ),
                )
                .await?;
            Some(token)
        }
        _ => None,
    };
    if args.demo {
        eprintln!("preparing the demo program (on an empty database only)…");
        if let Some(report) = fidelis_web::demo::seed_template(
            &store,
            Utc::now(),
            &args.template,
            fidelis_web::demo::MEMBERS,
            fidelis_web::demo::MONTHS,
        )
        .await
        .context("seeding the demo")?
        {
            eprintln!(
                "demo: program `{}` ({} template) with {} members and {} journals over thirty months",
                fidelis_web::demo::PROGRAM,
                args.template,
                report.members,
                report.journals
            );
        }
    }
    let config = ServerConfig {
        rate_limit_per_second: args.rate_limit,
        body_limit: args.body_limit_kib * 1024,
        request_timeout: std::time::Duration::from_secs(args.request_timeout_secs),
        header_timeout: std::time::Duration::from_secs(args.header_timeout_secs),
        max_connections: args
            .max_connections
            .map_or_else(fidelis_web::server::default_max_connections, |n| n as usize),
        secure_cookies: args.secure_cookies,
        webhooks_public_only: args.webhooks_public_only,
        ..ServerConfig::default()
    };
    let base = format!("http://{}", args.listen);
    println!(
        "Fidelis is listening on {base} ({} database)",
        store.dialect()
    );
    println!("  API:      {base}/api/v1   (OpenAPI document: {base}/openapi.json)");
    println!("  health:   {base}/healthz, {base}/readyz, metrics: {base}/metrics");
    match &admin_token {
        Some(token) => {
            println!("  admin token (shown once, keep it): {token}");
            println!("  try:      curl -H 'Authorization: Bearer {token}' {base}/api/v1/programs");
        }
        None => println!(
            "  admin token: the one in FIDELIS_ADMIN_TOKEN, or the one printed on first start"
        ),
    }
    if args.demo {
        match fidelis_web::demo::access(&store, Utc::now()).await? {
            Some(access) => {
                println!(
                    "  console:  {base}/console   sign in as {} with password {}",
                    access.email, access.password
                );
                println!("            (a new password at every start of serve --demo)");
                println!(
                    "  portal:   {base}{}   (one-time link: member {} chooses a password)",
                    access.member_link,
                    fidelis_web::demo::DEMO_MEMBER
                );
            }
            None => println!("  console:  {base}/console"),
        }
        println!("  demo API: {base}/api/v1/programs/demo/members/C-100000");
    } else {
        println!(
            "  console:  {base}/console   (staff sign in as users created with POST /api/v1/users or on the console's Users page)"
        );
    }
    let mail = match &args.smtp_url {
        Some(url) => Some(std::sync::Arc::new(
            fidelis_web::messages::Mailer::new(url, &args.mail_from)
                .map_err(|e| anyhow::anyhow!(e))?,
        )),
        None => None,
    };
    let delivery = fidelis_web::webhooks::DeliveryConfig {
        attempts: args.webhook_attempts,
        backoff: std::time::Duration::from_millis(args.webhook_backoff_ms),
        lease: std::time::Duration::from_secs(args.webhook_lease_secs),
        timeout: std::time::Duration::from_secs((args.webhook_lease_secs / 2).clamp(1, 10)),
        mail,
        public_only: args.webhooks_public_only,
        ..Default::default()
    };
    fidelis_web::webhooks::spawn(store.clone(), delivery);
    if let Some(url) = &args.events {
        let node = fidelis_web::streams::node_name();
        let mut config = fidelis_web::streams::StreamConfig::new(url, &node);
        config.stream = args.events_stream.clone();
        config.lease = std::time::Duration::from_secs(args.events_lease_secs);
        // Registered before the first request: from now on every event waits for its
        // publication, also while NATS is not reachable yet.
        store
            .register_stream(&config.stream, Utc::now())
            .await
            .context("registering the event stream")?;
        println!(
            "  events:   published to NATS JetStream at {url}, stream {}",
            config.stream
        );
        fidelis_web::streams::spawn(store.clone(), config);
    }
    fidelis_web::serve(AppState::new(store, config), args.listen)
        .await
        .with_context(|| format!("serving on {}", args.listen))?;
    Ok(ExitCode::SUCCESS)
}

/// `--events`: a NATS URL.
fn nats_url(text: &str) -> Result<String, String> {
    if text.starts_with("nats://") || text.starts_with("tls://") {
        Ok(text.to_owned())
    } else {
        Err("expected nats://host:port or tls://host:port".to_owned())
    }
}

/// `--events-stream`: a JetStream stream name (letters, digits, `-` and `_`).
fn stream_name(text: &str) -> Result<String, String> {
    if !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(text.to_owned())
    } else {
        Err("letters, digits, - and _, at most 64".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: super::ServeArgs,
    }

    /// SQLite is served by one runtime thread unless told otherwise; PostgreSQL by one per
    /// core.
    #[test]
    fn sqlite_is_served_by_one_thread_unless_told() {
        let cli = Cli::parse_from(["fidelis"]);
        assert_eq!(cli.serve.runtime_threads("sqlite://fidelis.db"), Some(1));
        assert_eq!(cli.serve.runtime_threads("postgres://u@localhost/db"), None);
        let cli = Cli::parse_from(["fidelis", "--threads", "3"]);
        assert_eq!(cli.serve.runtime_threads("sqlite://fidelis.db"), Some(3));
        assert_eq!(
            cli.serve.runtime_threads("postgres://u@localhost/db"),
            Some(3)
        );
    }
}
