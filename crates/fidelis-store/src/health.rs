//! What the store knows of its database's health: whether it can be reached and whether
//! writes work. Servers use it to answer readiness within a bound and to fail fast while
//! the database is gone, instead of queueing every request behind a connection timeout.
//!
//! The state is learnt from failures ([`Store::note_failure`]) and from slow requests
//! ([`Store::suspect`]); a background probe pings the database until it answers, so the
//! fail-fast state ends within a probe interval of the database coming back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;

use crate::error::{Result, StoreError, Unavailability};
use crate::{Db, Store};

/// How long one probe may take before the database counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between probes while the database is unreachable.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The database's health as last seen (shared by every clone of a [`Store`]).
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
    writes_failing: AtomicBool,
    probing: AtomicBool,
}

impl Health {
    /// The database could not be reached, and no probe has reached it since.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// A write failed for the storage's sake (a full disk), and none is known to have
    /// committed since.
    pub fn writes_failing(&self) -> bool {
        self.writes_failing.load(Ordering::Acquire)
    }
}

impl Store {
    /// The database's health as last seen.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Records a failure a caller of the store met: an unreachable database starts the
    /// background probe (and callers may fail fast until it succeeds); a storage failure
    /// makes readiness check writes.
    pub fn note_failure(&self, kind: Unavailability) {
        match kind {
            Unavailability::Unreachable => {
                self.health.down.store(true, Ordering::Release);
                self.start_probe();
            }
            Unavailability::Storage => self.health.writes_failing.store(true, Ordering::Release),
            Unavailability::Busy => {}
        }
    }

    /// A request took longer than it may: probe the database in the background, and
    /// count it as unreachable if it does not answer within the probe's timeout.
    pub fn suspect(&self) {
        self.start_probe();
    }

    /// Readiness: the database answers, and — after a storage failure — a write commits.
    /// Answers within `within` (a database that hangs is not ready).
    pub async fn readiness(&self, within: Duration) -> std::result::Result<(), String> {
        let check = async {
            if self.health.writes_failing() {
                self.probe_write().await?;
                self.health.writes_failing.store(false, Ordering::Release);
            } else {
                self.ping().await?;
            }
            Ok::<(), StoreError>(())
        };
        match tokio::time::timeout(within, check).await {
            Ok(Ok(())) => {
                self.health.down.store(false, Ordering::Release);
                Ok(())
            }
            Ok(Err(e)) => {
                if let StoreError::Unavailable { kind, .. } = &e {
                    self.note_failure(*kind);
                }
                tracing::warn!(error = %e, "not ready");
                Err(if self.health.writes_failing() {
                    "writes are failing: the database's disk may be full".to_owned()
                } else {
                    "the database cannot be reached".to_owned()
                })
            }
            Err(_) => {
                // A database that does not answer within the bound is treated as gone
                // until the probe reaches it again.
                self.note_failure(Unavailability::Unreachable);
                Err(format!(
                    "the database did not answer within {} ms",
                    within.as_millis()
                ))
            }
        }
    }

    /// Rewrites the probe row: proof that a write commits.
    async fn probe_write(&self) -> Result<()> {
        let now = Utc::now();
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO health_probe (id, checked_at) VALUES (1, ?) \
                     ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                )
                .bind(now)
                .execute(pool)
                .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO health_probe (id, checked_at) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                )
                .bind(now)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Pings until the database answers, marking it unreachable meanwhile. One probe at a
    /// time per store; it needs a Tokio runtime (servers have one).
    fn start_probe(&self) {
        if self.health.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.health.probing.store(false, Ordering::Release);
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            loop {
                // Wait before each ping, the first too: a database shutting down ends its
                // sessions one by one, and a ping on a pooled connection it has not ended
                // yet would answer "up" just before it is gone.
                tokio::time::sleep(PROBE_INTERVAL).await;
                let answered = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await,
                    Ok(Ok(()))
                );
                if answered {
                    if store.health.down.swap(false, Ordering::AcqRel) {
                        tracing::info!("the database answers again");
                    }
                    break;
                }
                if !store.health.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!("the database does not answer; failing fast until it does");
                }
            }
            store.health.probing.store(false, Ordering::Release);
            // A failure noted between the last probe and now must not be left unprobed.
            if store.health.is_down() {
                store.start_probe();
            }
        });
    }
}
