//! Reads off the primary: a PostgreSQL streaming replica for the heavy reads.
//!
//! `fidelis serve --read-database postgres://…` names a hot standby of the primary. The
//! reports that scan much and change nothing — the dashboard's figures, the liability,
//! the analytics' purchase histories and promotion exposure, a member's ledger history —
//! read from it while it is fresh enough, and from the primary otherwise. Everything that
//! writes, and every read a decision depends on (balances before a redemption, the
//! program's revision, tokens), stays on the primary.
//!
//! **Freshness** is checked at most once a second: the replica is caught up when it has
//! replayed the primary's current WAL position (`pg_last_wal_replay_lsn() >=
//! pg_current_wal_lsn()` read on the primary just before); otherwise its lag is the time
//! since the last transaction it replayed (`now() - pg_last_xact_replay_timestamp()`), an
//! upper bound of how old what it shows is. Past `max_lag` — or when it cannot be asked —
//! reads go to the primary until it is fresh again. [`Store::replica_status`] says where
//! reads go and the lag (the server's `/metrics` shows them).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

use crate::{Db, Result, Store, StoreError};

/// How often the replica's lag is measured.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A read replica and what was last measured of it.
#[derive(Debug)]
pub(crate) struct Replica {
    pool: sqlx::PgPool,
    max_lag: Duration,
    state: Mutex<ReplicaState>,
}

#[derive(Debug, Clone, Copy)]
struct ReplicaState {
    checked: Option<Instant>,
    fresh: bool,
    lag_seconds: f64,
}

/// Where the reports' reads go, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaStatus {
    /// Seconds behind the primary at the last check (0 when caught up; very large when it
    /// could not be asked).
    pub lag_seconds: f64,
    /// Whether reads go to the replica (its lag within the bound).
    pub in_use: bool,
}

impl Store {
    /// Sends the reports' reads to the hot standby at `url` while it lags the primary by at
    /// most `max_lag`. The primary must be PostgreSQL, and `url` a server in recovery (a
    /// standby), or nothing is changed and the reason answered.
    pub async fn attach_replica(&mut self, url: &str, max_lag: Duration) -> Result<()> {
        if !matches!(self.db, Db::Postgres(_)) {
            return Err(StoreError::BadUrl(
                "a read database needs a PostgreSQL primary".to_owned(),
            ));
        }
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect)
            .await?;
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&pool)
            .await?;
        if !standby {
            return Err(StoreError::BadUrl(format!(
                "{url}: not a standby (pg_is_in_recovery() is false): a read database is a replica of the primary"
            )));
        }
        self.replica = Some(Arc::new(Replica {
            pool,
            max_lag,
            state: Mutex::new(ReplicaState {
                checked: None,
                fresh: false,
                lag_seconds: f64::INFINITY,
            }),
        }));
        Ok(())
    }

    /// Where the reports read, as last measured; `None` without a replica.
    pub fn replica_status(&self) -> Option<ReplicaStatus> {
        let replica = self.replica.as_ref()?;
        let state = *replica.state.lock().ok()?;
        Some(ReplicaStatus {
            lag_seconds: state.lag_seconds,
            in_use: state.fresh,
        })
    }

    /// The database a report reads from: the replica while it is fresh, else the primary.
    pub(crate) async fn reader(&self) -> Db {
        let Some(replica) = &self.replica else {
            return self.db.clone();
        };
        let last = replica.state.lock().map(|s| *s).ok();
        let fresh = match last {
            Some(s) if s.checked.is_some_and(|at| at.elapsed() < CHECK_EVERY) => s.fresh,
            _ => {
                let lag = self.measure_lag(replica).await;
                let fresh = lag.is_some_and(|l| l <= replica.max_lag.as_secs_f64());
                if let Ok(mut state) = replica.state.lock() {
                    *state = ReplicaState {
                        checked: Some(Instant::now()),
                        fresh,
                        lag_seconds: lag.unwrap_or(f64::INFINITY),
                    };
                }
                if !fresh {
                    tracing::debug!(lag = ?lag, "the read replica lags: reading from the primary");
                }
                fresh
            }
        };
        if fresh {
            Db::Postgres(replica.pool.clone())
        } else {
            self.db.clone()
        }
    }

    /// The replica's lag in seconds, or `None` when it cannot be told.
    async fn measure_lag(&self, replica: &Replica) -> Option<f64> {
        let Db::Postgres(primary) = &self.db else {
            return None;
        };
        let position: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(primary)
            .await
            .ok()?;
        let (caught_up, behind): (Option<bool>, Option<f64>) = sqlx::query_as(
            "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn, \
             CAST(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) AS float8)",
        )
        .bind(position)
        .fetch_one(&replica.pool)
        .await
        .ok()?;
        if caught_up == Some(true) {
            Some(0.0)
        } else {
            behind.map(|b| b.max(0.0))
        }
    }
}
