//! What lets one statement serve both dialects: both accept `$N` placeholders (sqlx's
//! SQLite driver binds `$N` by its number), and [`At`] binds and reads an instant as each
//! stores it — microseconds since the epoch in SQLite, `timestamptz` in PostgreSQL. Code
//! whose statements differ in nothing else is written once, in a macro body the two
//! dialects' transactions each expand (see `vouchers`).

use chrono::{DateTime, TimeZone, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Postgres, Sqlite, Type};

/// An instant, as either dialect stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct At(pub DateTime<Utc>);

impl Type<Sqlite> for At {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &<Sqlite as Database>::TypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for At {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'q, Sqlite>>::encode(self.0.timestamp_micros(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for At {
    fn decode(value: <Sqlite as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let us = <i64 as Decode<'r, Sqlite>>::decode(value)?;
        Utc.timestamp_micros(us)
            .single()
            .map(At)
            .ok_or_else(|| format!("instant {us} out of range").into())
    }
}

impl Type<Postgres> for At {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &<Postgres as Database>::TypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Postgres> for At {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<'q, Postgres>>::encode(self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for At {
    fn decode(value: <Postgres as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<'r, Postgres>>::decode(value).map(At)
    }
}

/// Runs `$body` (an expression yielding `Result`) in a write transaction `$tx` of either
/// dialect — `BEGIN IMMEDIATE` on SQLite (the one writer), a plain transaction on
/// PostgreSQL — committed when it is `Ok`, rolled back otherwise. `$pg` is true on
/// PostgreSQL (for `FOR UPDATE`, which SQLite has no use for).
macro_rules! in_write_tx {
    ($store:expr, |$tx:ident, $pg:ident| $body:expr) => {{
        match &$store.db {
            $crate::Db::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let $pg = false;
                let out = $body;
                if out.is_ok() {
                    $tx.commit().await?;
                }
                out
            }
            $crate::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let $pg = true;
                let out = $body;
                if out.is_ok() {
                    $tx.commit().await?;
                }
                out
            }
        }
    }};
}
pub(crate) use in_write_tx;

/// Runs `$body` with `$conn`, a connection of either dialect's pool (reads).
macro_rules! with_pool {
    ($store:expr, |$conn:ident| $body:expr) => {{
        match &$store.db {
            $crate::Db::Sqlite(pool) => {
                let $conn = pool;
                $body
            }
            $crate::Db::Postgres(pool) => {
                let $conn = pool;
                $body
            }
        }
    }};
}
pub(crate) use with_pool;
