//! The Fidelis loyalty core: program definitions, currencies, the points ledger and
//! journal processing.
//!
//! # Architecture invariant
//! This crate does no I/O and reads no clock: no files, sockets, databases, threads or
//! `Utc::now()`. Time is an argument (`now`, `as_of`); state is an argument (a
//! [`ledger::MemberLedger`] the store loaded). The same functions serve the server, the
//! batch import and the simulator, and are tested without any of them.
//!
//! # API boundary
//! - [`program::Program::compile`] turns a definition document into a [`program::Program`],
//!   or lists every problem.
//! - [`journal::Journal::parse`] turns a journal document into a [`journal::Journal`].
//! - [`process::process`] applies a journal to a member's ledger; [`process::settle`]
//!   applies the expiries and releases due.
//!
//! The glossary (accrual, bucket, pool, arrears, settlement…) is in `ARCHITECTURE.md`.

pub mod analytics;
pub mod book;
pub mod calendar;
pub mod catalog;
pub mod fraud;
pub mod holds;
pub mod ids;
pub mod journal;
pub mod ledger;
pub mod lifecycle;
pub mod members;
pub mod messaging;
pub mod money;
pub mod objects;
pub mod outcome;
pub mod partners;
pub mod process;
pub mod program;
pub mod promotions;
pub mod segments;
pub mod simulate;
pub mod templates;
pub mod tiers;
pub mod vouchers;
