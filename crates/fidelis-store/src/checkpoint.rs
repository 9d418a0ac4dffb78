//! SQLite: the write-ahead log copied into the database file beside the writer, not in
//! its commits.
//!
//! In WAL mode a commit appends pages to the `-wal` file; a checkpoint copies them into
//! the database file and syncs it. SQLite runs one inside the commit that finds the log
//! past `wal_autocheckpoint` pages, so the writer waits for it: in an import of large
//! batches nearly every commit did (measured: 3.5 s of a 35 s import of 1,000,000
//! journals), and a realtime commit that drew one stood out in the latencies.
//!
//! A task of the store's runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its
//! own (SQLite runs each connection's statements on a thread of its own) a moment after
//! others committed. A passive checkpoint never blocks the writer nor waits for it: it
//! copies what was committed when it began. The writer then finds the log copied when it
//! begins its next transaction and starts the log again from its beginning, so the log
//! seldom reaches `wal_autocheckpoint` pages. If it does (this task lagging, or not
//! running: a store of another process), the writer checkpoints itself as before, with
//! most pages copied already. Durability does not change: a commit is durable when the
//! log is synced, and a checkpoint only moves pages that are durable already.

use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// How often the task looks whether others committed (`PRAGMA data_version`, a read of
/// the shared memory index) and, if so, checkpoints.
const EVERY: Duration = Duration::from_millis(200);

/// The background checkpoint of one database file; stopped when dropped (with the last
/// clone of the store).
#[derive(Debug)]
pub(crate) struct Checkpointer {
    task: tokio::task::AbortHandle,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checkpointer {
    /// Starts checkpointing the database file `connect` opens (not one in memory: the
    /// caller knows, and it has no log). Needs a Tokio runtime.
    pub(crate) fn start(connect: &SqliteConnectOptions) -> Option<Self> {
        if connect.get_filename().as_os_str().is_empty() {
            return None;
        }
        // Never creates the file again (removed while the store runs); a checkpoint reads
        // few pages through the cache.
        let connect = connect
            .clone()
            .create_if_missing(false)
            .pragma("cache_size", "-2048");
        let task = tokio::spawn(run(connect));
        Some(Self {
            task: task.abort_handle(),
        })
    }
}

/// Checkpoints until aborted. A connection that fails (a full disk, a removed file) is
/// replaced, after a pause; meanwhile commits checkpoint themselves past
/// `wal_autocheckpoint`, so nothing is lost, only the time this task saves them.
async fn run(connect: SqliteConnectOptions) {
    loop {
        match connect.connect().await {
            Ok(conn) => {
                let e = checkpoint_while_it_works(conn).await;
                tracing::debug!("background WAL checkpoint: {e}");
            }
            Err(e) => tracing::debug!("background WAL checkpoint, connecting: {e}"),
        }
        tokio::time::sleep(EVERY * 5).await;
    }
}

/// Checkpoints a moment after others commit, until the connection fails.
async fn checkpoint_while_it_works(mut conn: sqlx::SqliteConnection) -> sqlx::Error {
    let mut seen: Option<i64> = None;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Changes whenever another connection commits.
        let version: i64 = match sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                let _ = conn.close().await;
                return e;
            }
        };
        if seen == Some(version) {
            continue;
        }
        seen = Some(version);
        // A failure (a full disk) leaves the log as it was, to be copied after the next
        // commit.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::debug!("background WAL checkpoint: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use sqlx::sqlite::{SqliteJournalMode, SqlitePool, SqlitePoolOptions};

    use super::*;

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// Commits about `mb` megabytes.
    async fn write(pool: &SqlitePool, mb: i64) {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO t SELECT randomblob(1000) FROM n",
        )
        .bind(mb * 1000)
        .execute(pool)
        .await
        .expect("the rows");
    }

    async fn grows_beyond(path: &Path, bytes: u64, within: Duration) -> bool {
        let started = std::time::Instant::now();
        while started.elapsed() < within {
            if size(path) > bytes {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        size(path) > bytes
    }

    /// Commits stay in the log (below `wal_autocheckpoint`) until the task copies them
    /// into the database file, which it does on its own within moments; once it is
    /// dropped, nothing is copied any more.
    #[tokio::test]
    async fn the_log_is_copied_beside_the_writer_until_dropped() {
        let path: PathBuf =
            std::env::temp_dir().join(format!("fidelis-checkpoint-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("wal_autocheckpoint", "100000");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await
            .expect("a database file");
        sqlx::query("CREATE TABLE t (b BLOB)")
            .execute(&pool)
            .await
            .expect("the table");
        write(&pool, 4).await;
        tokio::time::sleep(EVERY * 3).await;
        let logged = size(&path);
        assert!(
            logged < 1_000_000,
            "copied without the task: {logged} bytes"
        );

        let checkpointer = Checkpointer::start(&connect).expect("a file");
        assert!(
            grows_beyond(&path, 4_000_000, Duration::from_secs(10)).await,
            "the log was not copied: {} bytes",
            size(&path)
        );
        write(&pool, 2).await;
        assert!(
            grows_beyond(&path, 6_000_000, Duration::from_secs(10)).await,
            "a later commit was not copied: {} bytes",
            size(&path)
        );

        drop(checkpointer);
        tokio::time::sleep(EVERY * 2).await;
        let copied = size(&path);
        write(&pool, 4).await;
        tokio::time::sleep(EVERY * 4).await;
        assert_eq!(size(&path), copied, "copied after the task was dropped");
        pool.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
