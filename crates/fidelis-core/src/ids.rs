//! Identifiers: the validated names and numbers that everything else refers to.
//!
//! External identifiers (a program's code, a member's customer number, a journal's
//! idempotency key) arrive as text from outside; they are parsed here once, so the rest
//! of the core takes the validated type and never re-checks.
//! Internal identifiers (`MemberId`, `JournalId`) are numbers the store assigns.

use std::fmt;
use std::sync::Arc;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("contains {found:?}; allowed are {allowed}")]
    BadChar { found: char, allowed: &'static str },
}

fn check_chars(
    s: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    let len = s.chars().count();
    if len > max {
        return Err(IdError::TooLong { len, max });
    }
    match s.chars().find(|c| !ok(*c)) {
        Some(found) => Err(IdError::BadChar { found, allowed }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, allowed = $allowed:expr, $ok:expr) => {
        $(#[$doc])*
        ///
        /// Shared, not copied: a clone is a reference count, as identifiers are copied into
        /// every record and outcome a journal produces.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        /// As the quoted text: `{:?}` in a message reads `"C-1"`, never a Rust type name.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl $name {
            /// The longest value accepted, in characters.
            pub const MAX_LEN: usize = $max;

            /// Parses and validates.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_chars(s, $max, $allowed, $ok)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&raw).map_err(|e| serde::de::Error::custom(format!("{raw:?} {e}")))
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A program's code: `[a-z0-9-]{1,64}`, as it appears in URLs.
    ProgramCode,
    max = 64,
    allowed = "a-z, 0-9 and -",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
);

string_id!(
    /// A short code naming something inside a program: a loyalty currency, a tier, an
    /// activity type, a reason. `[a-z0-9_-]{1,32}`.
    Code,
    max = 32,
    allowed = "a-z, 0-9, _ and -",
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
);

string_id!(
    /// An identifier chosen outside Fidelis: a member's customer number, a journal's
    /// idempotency key. Any printable text without control characters, up to 128
    /// characters.
    ExternalId,
    max = 128,
    allowed = "printable characters",
    |c: char| !c.is_control()
);

/// A member, as numbered by the store. Unique across programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub i64);

/// A journal, as numbered by the store. Unique across programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JournalId(pub i64);

/// A ledger entry: the journal that wrote it and its position among that journal's entries.
///
/// Entries are append-only, so this key never changes meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKey {
    pub journal: JournalId,
    pub seq: u32,
}

/// A bucket is named by the credit entry that opened it.
pub type BucketId = EntryKey;

/// The position of a loyalty currency in its program's currency list.
///
/// Accounts and buckets refer to currencies by index: the program is always at hand, and
/// an index is cheaper to copy and compare than a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CurrencyIx(pub u16);

impl CurrencyIx {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_codes_follow_the_url_rule() {
        assert!(ProgramCode::parse("retail-2026").is_ok());
        assert_eq!(ProgramCode::parse(""), Err(IdError::Empty));
        assert!(matches!(
            ProgramCode::parse("Retail"),
            Err(IdError::BadChar { found: 'R', .. })
        ));
        assert!(matches!(
            ProgramCode::parse(&"a".repeat(65)),
            Err(IdError::TooLong { len: 65, max: 64 })
        ));
    }

    #[test]
    fn external_ids_refuse_control_characters_and_long_values() {
        assert!(ExternalId::parse("pos-4711/2026-11-25 #42 ünïcode").is_ok());
        assert!(matches!(
            ExternalId::parse("a\nb"),
            Err(IdError::BadChar { found: '\n', .. })
        ));
        assert!(ExternalId::parse(&"é".repeat(128)).is_ok());
        assert!(ExternalId::parse(&"é".repeat(129)).is_err());
    }
}
