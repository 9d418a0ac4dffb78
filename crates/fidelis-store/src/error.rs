//! Errors of the store: refusals a caller can act on, and failures it cannot.

use fidelis_core::program::Problem;

/// What went wrong with a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one the store understands.
    #[error("{0}")]
    BadUrl(String),
    #[error("no program {0:?}")]
    UnknownProgram(String),
    #[error("no member {0:?} in this program")]
    UnknownMember(String),
    #[error("member {0:?} is already enrolled in this program")]
    MemberExists(String),
    /// Something with this identity exists already.
    #[error("{0}")]
    Conflict(String),
    /// A request the program's rules refuse (an unknown tier, a transfer over its limit);
    /// `code` is machine-readable. Nothing was changed.
    #[error("{1}")]
    Refused(&'static str, String),
    /// A program definition that cannot be stored; nothing was changed.
    #[error("the program definition has {} problem(s)", .0.len())]
    InvalidProgram(Vec<Problem>),
    /// Stored data that contradicts the rules (a bug, or a database edited by hand).
    #[error("stored data is inconsistent: {0}")]
    Inconsistent(String),
    /// The program was changed since the caller read it: read it again and retry.
    #[error("program {0:?} was changed meanwhile")]
    ProgramChanged(String),
    /// The store is shutting down; the operation's outcome is unknown (retrying with the
    /// same external id is safe).
    #[error("the store is shutting down")]
    Stopped,
    /// The database could not do it for a reason of its own state, not the request's: it
    /// cannot be reached, its disk is full, it is overloaded. Whether a change took effect
    /// is unknown; retrying later with the same external id is safe.
    #[error("{detail}")]
    Unavailable {
        kind: Unavailability,
        detail: String,
    },
    #[error(transparent)]
    Database(sqlx::Error),
    #[error(transparent)]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// A unique-key violation: a concurrent writer got there first.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

/// Why the database is unavailable (see [`StoreError::Unavailable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// It cannot be reached: connections refused, broken or timed out, the server shutting
    /// down. Requests fail fast until a probe reaches it again ([`crate::Health`]).
    Unreachable,
    /// It answers, but cannot write: the disk is full, or the storage failed. Readiness
    /// says so until a write commits again.
    Storage,
    /// It is busy (locked, out of connections, a serialization failure): retry shortly.
    Busy,
}

impl Unavailability {
    /// The machine-readable code clients see.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unreachable => "database_unavailable",
            Self::Storage => "storage_unavailable",
            Self::Busy => "database_busy",
        }
    }
}

/// Classifies a database error: failures of the database's state become
/// [`StoreError::Unavailable`], everything else stays [`StoreError::Database`].
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match unavailability(&e) {
            Some(kind) => Self::Unavailable {
                kind,
                detail: e.to_string(),
            },
            None => Self::Database(e),
        }
    }
}

fn unavailability(e: &sqlx::Error) -> Option<Unavailability> {
    use Unavailability::*;
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(Unreachable),
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite's primary result code is the low byte of the extended one.
                match code.parse::<i32>().ok()? & 0xff {
                    13 /* FULL */ | 10 /* IOERR */ | 8 /* READONLY */ => Some(Storage),
                    5 /* BUSY */ | 6 /* LOCKED */ => Some(Busy),
                    14 /* CANTOPEN */ => Some(Unreachable),
                    _ => None,
                }
            } else {
                // PostgreSQL's SQLSTATE classes: 08 connection exception, 57P0x the
                // server shutting down or starting, 53 insufficient resources (53100 disk
                // full), 58 system error (I/O), 40 a serialization failure or deadlock.
                match code.as_ref() {
                    c if c.starts_with("08") => Some(Unreachable),
                    "57P01" | "57P02" | "57P03" => Some(Unreachable),
                    "53100" => Some(Storage),
                    c if c.starts_with("58") => Some(Storage),
                    c if c.starts_with("53") => Some(Busy),
                    "40001" | "40P01" => Some(Busy),
                    _ => None,
                }
            }
        }
        _ => None,
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Inconsistent(format!("stored JSON: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
