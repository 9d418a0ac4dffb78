//! Test support: throw-away PostgreSQL servers from the system's binaries, and temporary
//! SQLite databases.
//!
//! A PostgreSQL server is started once per process, on a free loopback port, in a
//! temporary directory; a watchdog stops it and removes the directory when the process
//! ends. When `FIDELIS_TEST_PG_URL` names a server (the README's test command starts one
//! for the whole run), that server is used instead. Each test gets its own database.
//! Missing binaries fail the test with a message saying how to install them; they never
//! skip it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The environment variable naming a shared test server (`postgres://USER@HOST:PORT`).
pub const SHARED_SERVER_ENV: &str = "FIDELIS_TEST_PG_URL";

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct PgServer {
    /// `postgres://fidelis@127.0.0.1:PORT`, without a database.
    pub base_url: String,
    pub port: u16,
    pub bindir: PathBuf,
    pub dir: PathBuf,
    /// The postmaster's process id (it changes with [`PgServer::restart`]).
    pid: AtomicU32,
    options: PgOptions,
    as_user: Option<(u32, u32)>,
}

/// How a server is configured.
#[derive(Debug, Clone, Copy)]
pub struct PgOptions {
    /// Durable commits (`fsync`, `synchronous_commit`): for benchmarks. Tests run without
    /// them, which PostgreSQL's documentation recommends for throw-away clusters.
    pub durable: bool,
    /// Stop the server when the process that started it exits.
    pub watchdog: bool,
}

/// Where the PostgreSQL server binaries (`initdb`, `postgres`) are: `PG_BINDIR`, then
/// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then `PATH`.
pub fn find_bindir() -> Result<PathBuf, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    Err("PostgreSQL server binaries (initdb, postgres) were not found in PG_BINDIR, pg_config --bindir, \
         /usr/lib/postgresql/*/bin or PATH. Install them with `apt-get install postgresql` \
         (the README's test command, `cargo xtask test`, does this for you)."
        .into())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: run it as the `postgres` user (Debian's package
/// creates it), through `setpriv`, which execs in place so the PID is the server's.
fn command(program: &Path, as_user: Option<(u32, u32)>) -> Command {
    match as_user {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .ok_or_else(|| "running as root, and there is no `postgres` user to run PostgreSQL as (apt-get install postgresql creates it)".into())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

impl PgServer {
    /// Starts a server in a new temporary directory on a free loopback port.
    pub fn start(options: PgOptions) -> Result<Self, String> {
        let bindir = find_bindir()?;
        let as_user = if is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("fidelis-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        let data = dir.join("data");
        if let Some((uid, gid)) = as_user {
            chown_tree(&dir, uid, gid)?;
        }
        let out = command(&bindir.join("initdb"), as_user)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "fidelis",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port()?;
        let server = Self {
            base_url: format!("postgres://fidelis@127.0.0.1:{port}"),
            port,
            bindir,
            dir,
            pid: AtomicU32::new(0),
            options,
            as_user,
        };
        server.spawn()?;
        if options.watchdog {
            server.watch(std::process::id());
        }
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts a hot standby of this server: a base backup streamed from it
    /// (`pg_basebackup -R`, so the copy follows it by streaming replication), on a free
    /// port, readable while it replays. Stopped like any other server.
    pub fn start_standby(&self) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("fidelis-pg-standby-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        if let Some((uid, gid)) = self.as_user {
            chown_tree(&dir, uid, gid)?;
        }
        let out = command(&self.bindir.join("pg_basebackup"), self.as_user)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "fidelis",
            ])
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"])
            .output()
            .map_err(|e| format!("pg_basebackup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port()?;
        let standby = Self {
            base_url: format!("postgres://fidelis@127.0.0.1:{port}"),
            port,
            bindir: self.bindir.clone(),
            dir,
            pid: AtomicU32::new(0),
            options: self.options,
            as_user: self.as_user,
        };
        standby.spawn()?;
        if self.options.watchdog {
            standby.watch(std::process::id());
        }
        standby.wait_ready()?;
        Ok(standby)
    }

    /// Starts the postmaster on the server's data directory and port.
    fn spawn(&self) -> Result<(), String> {
        let durability = if self.options.durable {
            // Benchmarks also count statements (`pg_stat_statements`, a few per cent of
            // overhead on both sides of a comparison) to say what one journal costs.
            vec![
                "fsync=on",
                "synchronous_commit=on",
                "full_page_writes=on",
                "shared_preload_libraries=pg_stat_statements",
            ]
        } else {
            vec![
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ]
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = self.as_user {
            chown_tree(&self.dir.join("server.log"), uid, gid)?;
        }
        let mut cmd = command(&self.bindir.join("postgres"), self.as_user);
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir);
        for setting in [
            "listen_addresses=127.0.0.1",
            "max_connections=300",
            "shared_buffers=256MB",
            "max_locks_per_transaction=256",
        ]
        .iter()
        .chain(durability.iter())
        {
            cmd.arg("-c").arg(setting);
        }
        // Extra settings for a look inside a run (e.g. auto_explain), `;`-separated.
        if let Ok(extra) = std::env::var("FIDELIS_PG_SETTINGS") {
            for setting in extra.split(';').filter(|s| !s.is_empty()) {
                cmd.arg("-c").arg(setting);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        self.pid.store(child.id(), Ordering::Release);
        Ok(())
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }

    /// The postmaster and its children (backends, writers), postmaster first.
    fn processes(&self) -> Vec<u32> {
        let parent = self.pid();
        let mut pids = vec![parent];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid …`; comm may hold spaces, so read after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                pids.push(pid);
            }
        }
        pids
    }

    fn signal_all(&self, signal: &str) {
        for pid in self.processes() {
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Freezes the whole server (SIGSTOP to the postmaster and every backend): connections
    /// stay open and nothing answers — a hung database.
    pub fn freeze(&self) {
        self.signal_all("-STOP");
    }

    /// Lets a frozen server run again.
    pub fn thaw(&self) {
        self.signal_all("-CONT");
    }

    /// Stops the server with a fast shutdown (open transactions are cut) and keeps its
    /// data, for [`PgServer::restart`].
    pub fn shutdown_fast(&self) {
        let pid = self.pid();
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            }) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a server stopped by [`PgServer::shutdown_fast`] again, on the same port and
    /// data, and waits until it accepts connections.
    pub fn restart(&self) -> Result<(), String> {
        self.spawn()?;
        self.wait_ready()
    }

    /// Stops the server and removes its directory once process `parent` has exited.
    fn watch(&self, parent: u32) {
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; \
             pid=$(head -n 1 '{dir}/data/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pid\" ]; then kill -CONT $pid 2>/dev/null; kill -INT $pid 2>/dev/null; \
             for i in $(seq 1 40); do kill -0 $pid 2>/dev/null || break; sleep 0.25; done; \
             kill -KILL $pid 2>/dev/null; fi; rm -rf '{dir}'",
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "fidelis",
                    "-q",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "PostgreSQL did not become ready on port {}:\n{log}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        create_database(&self.bindir, &self.base_url, name)
    }

    /// Stops the server now (fast shutdown, thawed first if frozen) and removes its
    /// directory.
    pub fn stop(&self) {
        self.thaw();
        self.shutdown_fast();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn create_database(bindir: &Path, base_url: &str, name: &str) -> Result<String, String> {
    let (host, port) = host_port(base_url)?;
    let out = Command::new(bindir.join("createdb"))
        .args(["-h", &host, "-p", &port, "-U", "fidelis", name])
        .output()
        .map_err(|e| format!("createdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(format!("{base_url}/{name}"))
}

fn host_port(base_url: &str) -> Result<(String, String), String> {
    let rest = base_url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{base_url}: not a URL"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{base_url}: no port"))?;
    Ok((host.to_owned(), port.to_owned()))
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty PostgreSQL database for one test. Panics with the reason if no server
/// can be had: a PostgreSQL test never passes without PostgreSQL.
pub fn pg_url() -> String {
    let name = format!(
        "t{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let result = match std::env::var(SHARED_SERVER_ENV) {
        Ok(base) => find_bindir()
            .and_then(|bindir| create_database(&bindir, base.trim_end_matches('/'), &name)),
        Err(_) => {
            let server = SERVER.get_or_init(|| {
                PgServer::start(PgOptions {
                    durable: false,
                    watchdog: true,
                })
            });
            server
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|s| s.create_database(&name))
        }
    };
    result.unwrap_or_else(|e| panic!("PostgreSQL for this test: {e}"))
}

/// A SQLite database in a temporary directory, removed when dropped.
pub struct SqliteDb {
    pub url: String,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

/// A fresh SQLite database file for one test.
pub fn sqlite_db() -> SqliteDb {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let path = dir.path().join("fidelis.db");
    SqliteDb {
        url: format!("sqlite://{}", path.display()),
        path,
        _dir: dir,
    }
}

/// A small tmpfs mounted on a temporary directory, unmounted when dropped: a disk that
/// fills up. Mounting needs root (the README's test command runs as root, as CI does).
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` bytes.
    pub fn mount(bytes: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mounting a {bytes}-byte tmpfs failed (it needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            path: dir.path().to_owned(),
            _dir: dir,
        })
    }

    /// Fills the file system: writes `name` until the disk is full.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path.join(name);
        if let Ok(mut file) = std::fs::File::create(&path) {
            let block = vec![0u8; 64 * 1024];
            while file.write_all(&block).is_ok() {}
            let mut byte = [0u8; 1];
            while file.write_all(&byte).is_ok() {
                byte[0] = 1;
            }
            let _ = file.sync_all();
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn urls_split_into_host_and_port() {
        assert_eq!(
            host_port("postgres://fidelis@127.0.0.1:5433").expect("a URL with a host and port"),
            ("127.0.0.1".into(), "5433".into())
        );
        assert!(host_port("nonsense").is_err());
    }
}

/// Generates, for each listed test function `f(Store)`, one test per database: a module
/// `sqlite` (a temporary SQLite file) and a module `postgres` (this run's throw-away
/// server, a fresh database each). The calling crate depends on `fidelis-store` and tokio.
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::sqlite_db();
                    let store = fidelis_store::Store::connect(&db.url).await.expect("connect to SQLite");
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let url = $crate::pg_url();
                    let store = fidelis_store::Store::connect(&url).await.expect("connect to PostgreSQL");
                    super::$name(store).await;
                }
            )*
        }
    };
}
