//! What the store's behaviour tests share: a program stored from its definition, with
//! members enrolled on 1 January 2026.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::program::{Program, ProgramDocument};
use fidelis_store::{Actor, Enrollment, LoadedProgram, Store};

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Stores the program `definition` (as of 1 January 2026) and enrols `members` in it.
pub async fn program_with_members<S: AsRef<str>>(
    store: &Store,
    definition: serde_json::Value,
    members: &[S],
) -> Arc<LoadedProgram> {
    let doc: ProgramDocument = serde_json::from_value(definition).unwrap();
    let program = Program::compile(&doc, None).unwrap_or_else(|e| panic!("{e:?}"));
    let start = utc("2026-01-01T00:00:00Z");
    let (loaded, _) = store
        .put_program(&program, start, &Actor::cli())
        .await
        .unwrap();
    for m in members {
        store
            .enroll(
                &loaded,
                &Enrollment {
                    external_id: ExternalId::parse(m.as_ref()).unwrap(),
                    profile: serde_json::json!({}),
                    enrolled_at: start,
                },
                start,
            )
            .await
            .unwrap();
    }
    loaded
}
