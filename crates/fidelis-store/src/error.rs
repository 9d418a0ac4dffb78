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
    #[error(transparent)]
    Database(#[from] sqlx::Error),
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

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Inconsistent(format!("stored JSON: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
