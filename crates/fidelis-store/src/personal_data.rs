//! Personal data (PRODUCT.md §15): everything held about a member as one JSON document
//! (export), and erasure, which removes the member's personal data and keeps the ledger
//! whole under a pseudonymous id.
//!
//! What counts as personal: the profile (every field), the external id (an operator may
//! use an e-mail address or a phone number as one), the member's sign-in (password hash,
//! sign-in links, sessions, a portal user and its e-mail), the consents, the free-text
//! notes of claims,
//! and every copy of these in journal documents, events, import rejections and the audit
//! log. What stays: the member's row (closed, `erased_at` set, a new external id
//! `erased-…`), its journals, entries, buckets, accounts, vouchers, orders, claims
//! (without their notes), tiers, scores and partner entries — so balances, sums,
//! liability and partner settlements do not move by one point.
//!
//! A member merged into another is the same person: exporting or erasing the survivor
//! includes every member merged into it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::access::AuditEntry;
use crate::dialect::{At, in_write_tx, with_pool};
use crate::engine::{LoadedProgram, member_lock_key};
use crate::error::{Result, StoreError};
use crate::{Actor, Store};

/// The export document's format, its first key: a reader checks it before anything else.
pub const EXPORT_FORMAT: &str = "fidelis.member-export/1";

/// One table's rows about a member (and the members merged into it). The filter's tokens:
/// `{ids}` the member ids, `{exts}` their external ids, `{actors}` the names their own
/// sessions act under, `{code}` the program's code, `{pid}` its id.
struct Section {
    table: &'static str,
    filter: &'static str,
    /// Columns never exported: secrets (hashes of passwords, tokens and sessions).
    secret: &'static [&'static str],
}

const fn section(table: &'static str, filter: &'static str) -> Section {
    Section {
        table,
        filter,
        secret: &[],
    }
}

/// Every table holding data about a member. The end-to-end test checks the list against
/// the schema: a table with a member column that is missing here fails it.
const SECTIONS: &[Section] = &[
    section("members", "id IN {ids}"),
    section("accounts", "member_id IN {ids}"),
    section("buckets", "member_id IN {ids}"),
    section("journals", "member_id IN {ids}"),
    section("entries", "member_id IN {ids}"),
    section("journal_keys", "member_id IN {ids}"),
    section("member_keys", "member_id IN {ids}"),
    section("referral_codes", "member_id IN {ids}"),
    section("order_keys", "member_id IN {ids}"),
    section("claim_keys", "member_id IN {ids}"),
    section("held_keys", "member_id IN {ids}"),
    section("member_tiers", "member_id IN {ids}"),
    section("promotion_usage", "member_id IN {ids}"),
    section("scheduled_rewards", "member_id IN {ids}"),
    section("member_activity", "member_id IN {ids}"),
    section("member_terms", "member_id IN {ids}"),
    section(
        "member_groups",
        "owner_id IN {ids} OR group_id IN (SELECT group_id FROM members WHERE id IN {ids})",
    ),
    section("vouchers", "member_id IN {ids}"),
    section(
        "voucher_entries",
        "voucher_id IN (SELECT id FROM vouchers WHERE member_id IN {ids})",
    ),
    section("orders", "member_id IN {ids}"),
    section("member_badges", "member_id IN {ids}"),
    section("member_benefits", "member_id IN {ids}"),
    section("claims", "member_id IN {ids}"),
    section("member_segments", "member_id IN {ids}"),
    section("member_scores", "member_id IN {ids}"),
    section(
        "partner_entries",
        "journal_id IN (SELECT id FROM journals WHERE member_id IN {ids})",
    ),
    section("events", "member_id IN {ids}"),
    section("member_consents", "member_id IN {ids}"),
    section("messages", "member_id IN {ids}"),
    section("expiry_notices", "member_id IN {ids}"),
    section("held_journals", "member_id IN {ids}"),
    section("member_risk", "member_id IN {ids}"),
    section("journal_receipts", "member_id IN {ids}"),
    section(
        "webhook_deliveries",
        "event_id IN (SELECT id FROM events WHERE member_id IN {ids})",
    ),
    Section {
        table: "member_credentials",
        filter: "member_id IN {ids}",
        secret: &["password_hash"],
    },
    Section {
        table: "signin_links",
        filter: "member_id IN {ids}",
        secret: &["token_hash"],
    },
    Section {
        table: "api_tokens",
        filter: "program = {code} AND member IN {exts}",
        secret: &["token_hash"],
    },
    Section {
        table: "users",
        filter: "program = {code} AND member IN {exts}",
        secret: &["password_hash"],
    },
    Section {
        table: "web_sessions",
        filter: "program = {code} AND member IN {exts}",
        secret: &["id_hash", "csrf"],
    },
    section(
        "audit_log",
        "program = {code} AND (subject IN {exts} OR actor IN {actors})",
    ),
];

/// Tables only PostgreSQL has (see migrations/postgres/0031_distribution.sql).
const POSTGRES_ONLY: &[&str] = &[
    "journal_keys",
    "member_keys",
    "referral_codes",
    "order_keys",
    "claim_keys",
    "held_keys",
];

/// Columns holding JSON as text on one dialect or the other: exported as JSON.
const JSON_COLUMNS: &[&str] = &[
    "profile",
    "document",
    "outcome",
    "state",
    "payload",
    "before",
    "after",
    "definition",
];

/// Columns stored as 0/1 on SQLite and as booleans on PostgreSQL.
const BOOL_COLUMNS: &[&str] = &[
    "pending",
    "dispatched",
    "active",
    "granted",
    "deferred",
    "urgent",
];

fn is_instant_column(name: &str) -> bool {
    name == "at"
        || name == "as_of"
        || name == "valid_from"
        || name.ends_with("_at")
        || name.ends_with("_until")
}

/// Free text and JSON documents that may carry copies of personal data: the rows each
/// scan looks at (`{has:c}` is "column c contains one of the personal strings") and the
/// columns it rewrites. Every table has an integer key of one or two columns.
struct Scrub {
    table: &'static str,
    keys: [&'static str; 2],
    columns: &'static [&'static str],
    /// Columns emptied (NULL) rather than rewritten: notes written about the member.
    cleared: &'static [&'static str],
    filter: &'static str,
    /// Rows about the member (SQL): their text loses every personal string; in any other
    /// row only a value that is wholly the member's id (or `member:<id>`) is replaced, so
    /// another member's `C-10001` survives erasing `C-1000`.
    tied: &'static str,
}

const SCRUBS: &[Scrub] = &[
    Scrub {
        table: "journals",
        keys: ["member_id", "id"],
        columns: &["document", "outcome", "state"],
        cleared: &[],
        filter: "member_id IN {ids}",
        tied: "1 = 1",
    },
    // Journals fraud rules held: the member's own, and others' whose reason names the
    // member (a shared receipt, a ring of transfers).
    Scrub {
        table: "held_journals",
        keys: ["id", "0"],
        columns: &["document", "reason", "decided_by"],
        cleared: &["note"],
        filter: "program_id = {pid} AND (member_id IN {ids} OR {has:document} OR {has:reason})",
        // A reason naming other members is free text: scrubbed through, not by value.
        tied: "member_id IN {ids} OR rule IN ('shared_receipt', 'transfer_ring')",
    },
    // Transfers and merges name the other member in the counterpart's journal.
    Scrub {
        table: "journals",
        keys: ["member_id", "id"],
        columns: &["document", "outcome", "state"],
        cleared: &[],
        filter: "program_id = {pid} AND kind IN ('transfer', 'merge') AND {has:document}",
        tied: "member_id IN {ids}",
    },
    Scrub {
        table: "events",
        keys: ["id", "0"],
        columns: &["subject", "payload"],
        cleared: &[],
        filter: "program_id = {pid} AND (member_id IN {ids} OR {has:subject} OR {has:payload})",
        // A hold's reason may name another member in its text (a shared receipt, a ring).
        tied: "member_id IN {ids} OR subject IN {exts} OR {quoted:payload} OR type = 'journal.held'",
    },
    // An SMTP server's refusal may quote the address.
    Scrub {
        table: "messages",
        keys: ["id", "0"],
        columns: &["last_error"],
        cleared: &[],
        filter: "member_id IN {ids} AND last_error IS NOT NULL",
        tied: "1 = 1",
    },
    Scrub {
        table: "claims",
        keys: ["id", "0"],
        columns: &["reason", "filed_by"],
        cleared: &["note"],
        filter: "member_id IN {ids}",
        tied: "1 = 1",
    },
    // A member's own reservations and redemptions name it as their actor.
    Scrub {
        table: "voucher_entries",
        keys: ["voucher_id", "seq"],
        columns: &["actor"],
        cleared: &[],
        filter: "voucher_id IN (SELECT id FROM vouchers WHERE member_id IN {ids})",
        tied: "1 = 1",
    },
    Scrub {
        table: "orders",
        keys: ["id", "0"],
        columns: &["reason"],
        cleared: &[],
        filter: "member_id IN {ids} AND reason IS NOT NULL",
        tied: "1 = 1",
    },
    Scrub {
        table: "import_rejections",
        keys: ["run_id", "line"],
        columns: &["external_id", "reason"],
        cleared: &[],
        filter: "run_id IN (SELECT id FROM import_runs WHERE program_id = {pid}) \
                 AND ({has:external_id} OR {has:reason})",
        tied: "1 = 0",
    },
    Scrub {
        table: "audit_log",
        keys: ["id", "0"],
        columns: &["actor", "subject", "before", "after"],
        cleared: &[],
        filter: "(program = {code} OR program IS NULL) \
                 AND ({has:actor} OR {has:subject} OR {has:before} OR {has:after})",
        tied: "subject IN {exts} OR actor IN {actors} OR {quoted:before} OR {quoted:after}",
    },
];

/// What a filter binds, in the order of its placeholders.
#[derive(Clone)]
enum Bind {
    Text(String),
    Int(i64),
}

/// The values a filter's tokens stand for.
struct Scope<'a> {
    ids: String,
    exts: String,
    actors: String,
    personal: String,
    code: &'a str,
    pid: i64,
}

/// `filter` with its tokens written in the dialect, numbered from `$first`, and what to bind.
fn render(filter: &str, scope: &Scope<'_>, pg: bool, first: usize) -> (String, Vec<Bind>) {
    let mut sql = String::with_capacity(filter.len() + 64);
    let mut binds = Vec::new();
    let mut rest = filter;
    while let Some(open) = rest.find('{') {
        sql.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("a token closes");
        let token = &rest[open + 1..close];
        let n = first + binds.len();
        let list = |json: &str, binds: &mut Vec<Bind>| {
            binds.push(Bind::Text(json.to_owned()));
            if pg {
                format!("(SELECT v FROM jsonb_array_elements_text(${n}::jsonb) AS p(v))")
            } else {
                format!("(SELECT value FROM json_each(${n}))")
            }
        };
        let piece = match token {
            "ids" => {
                binds.push(Bind::Text(scope.ids.clone()));
                if pg {
                    format!(
                        "(SELECT v::bigint FROM jsonb_array_elements_text(${n}::jsonb) AS p(v))"
                    )
                } else {
                    format!("(SELECT value FROM json_each(${n}))")
                }
            }
            "exts" => list(&scope.exts, &mut binds),
            "actors" => list(&scope.actors, &mut binds),
            "code" => {
                binds.push(Bind::Text(scope.code.to_owned()));
                format!("${n}")
            }
            "pid" => {
                binds.push(Bind::Int(scope.pid));
                format!("${n}")
            }
            quoted if quoted.starts_with("quoted:") => {
                // The column holds one of the external ids as a whole JSON string.
                let column = &quoted["quoted:".len()..];
                binds.push(Bind::Text(scope.exts.clone()));
                if pg {
                    format!(
                        "EXISTS (SELECT 1 FROM jsonb_array_elements_text(${n}::jsonb) AS p(v) \
                         WHERE strpos({column}, '\"' || p.v || '\"') > 0)"
                    )
                } else {
                    format!(
                        "EXISTS (SELECT 1 FROM json_each(${n}) AS p WHERE instr({column}, '\"' || p.value || '\"') > 0)"
                    )
                }
            }
            has => {
                let column = has.strip_prefix("has:").expect("a known token");
                binds.push(Bind::Text(scope.personal.clone()));
                if pg {
                    format!(
                        "EXISTS (SELECT 1 FROM jsonb_array_elements_text(${n}::jsonb) AS p(v) \
                         WHERE strpos({column}, p.v) > 0)"
                    )
                } else {
                    format!(
                        "EXISTS (SELECT 1 FROM json_each(${n}) AS p WHERE instr({column}, p.value) > 0)"
                    )
                }
            }
        };
        sql.push_str(&piece);
        rest = &rest[close + 1..];
    }
    sql.push_str(rest);
    (sql, binds)
}

/// Binds `binds` to a query of either dialect.
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut q = $query;
        for b in $binds {
            q = match b {
                Bind::Text(s) => q.bind(s.clone()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

/// One personal string and what replaces it. In a row about the member, a string of
/// four characters or more is replaced wherever it occurs (a name in a note); a shorter
/// one, and every one in a row about someone else, only where it is a whole value (a
/// one-letter external id must not rewrite every "m", nor `C-1000` another's `C-10001`).
/// Only the external id and `member:<id>` are looked for in rows about someone else.
#[derive(Debug, Clone)]
struct Substitution {
    from: String,
    to: String,
    /// The member's id (or `member:<id>`), looked for everywhere; else only in the
    /// member's own rows.
    id: bool,
}

impl Substitution {
    fn apply(&self, text: &str, tied: bool) -> Option<String> {
        if !tied && !self.id {
            return None;
        }
        if !tied || self.from.chars().count() < 4 {
            (text == self.from).then(|| self.to.clone())
        } else {
            text.contains(&self.from)
                .then(|| text.replace(&self.from, &self.to))
        }
    }
}

/// `text` without the personal strings: JSON has its string values rewritten (never its
/// keys; in the member's own rows any `profile` is emptied), other text is rewritten as
/// a whole. `None`: unchanged.
fn scrub_text(text: &str, subs: &[Substitution], tied: bool) -> Option<String> {
    if let Ok(mut value) = serde_json::from_str::<Value>(text)
        && (value.is_object() || value.is_array())
    {
        return scrub_value(&mut value, subs, tied).then(|| value.to_string());
    }
    scrub_text_plain(text, subs, tied)
}

fn scrub_value(value: &mut Value, subs: &[Substitution], tied: bool) -> bool {
    match value {
        Value::String(s) => match scrub_text_plain(s, subs, tied) {
            Some(next) => {
                *s = next;
                true
            }
            None => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| scrub_value(v, subs, tied) | changed),
        Value::Object(map) => {
            let mut changed = false;
            for (key, v) in map.iter_mut() {
                if tied && key == "profile" && v.as_object().is_some_and(|p| !p.is_empty()) {
                    *v = Value::Object(Map::new());
                    changed = true;
                } else {
                    changed |= scrub_value(v, subs, tied);
                }
            }
            changed
        }
        _ => false,
    }
}

fn scrub_text_plain(text: &str, subs: &[Substitution], tied: bool) -> Option<String> {
    let mut out: Option<String> = None;
    for s in subs {
        if let Some(next) = s.apply(out.as_deref().unwrap_or(text), tied) {
            out = Some(next);
        }
    }
    out
}

/// Profile fields that identify a person (by their name's parts): their values are looked
/// for in the member's rows. Other fields (a language, a preferred store, a tier wish)
/// identify no one and may equal words the ledger's documents use.
const PERSONAL_FIELDS: &[&str] = &[
    "name", "mail", "phone", "mobile", "address", "street", "city", "zip", "post", "birth",
    "passport", "iban", "card", "tax", "national",
];

/// The strings of a profile worth looking for: the values of its personal fields (at any
/// depth), and any value that looks like an e-mail address.
fn profile_strings(profile: &Value, personal: bool, out: &mut Vec<String>) {
    match profile {
        Value::String(s) if !s.trim().is_empty() && (personal || s.contains('@')) => {
            out.push(s.clone());
        }
        Value::Number(n) if personal && n.to_string().len() >= 6 => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| profile_strings(v, personal, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            let k = k.to_lowercase();
            let field = personal || PERSONAL_FIELDS.iter().any(|f| k.contains(f));
            profile_strings(v, field, out);
        }),
        _ => {}
    }
}

/// One exported row in the same shape on both dialects: instants in RFC 3339, JSON kept
/// as text parsed, 0/1 flags as booleans, secrets left out.
fn normalise_row(row: &mut Map<String, Value>, secret: &[&str]) {
    for s in secret {
        row.remove(*s);
    }
    for (key, value) in row.iter_mut() {
        if is_instant_column(key) {
            let instant = match &*value {
                Value::Number(n) => n.as_i64().and_then(|us| Utc.timestamp_micros(us).single()),
                Value::String(s) => DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
                _ => None,
            };
            if let Some(t) = instant {
                *value = Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
        } else if JSON_COLUMNS.contains(&key.as_str()) {
            if let Value::String(s) = &*value
                && let Ok(parsed) = serde_json::from_str::<Value>(s)
            {
                *value = parsed;
            }
        } else if BOOL_COLUMNS.contains(&key.as_str())
            && let Some(i) = value.as_i64()
        {
            *value = Value::Bool(i != 0);
        }
    }
}

/// What an erasure did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Erasure {
    /// The member's new, pseudonymous external id.
    pub member: String,
    /// The members erased: the member and every member merged into it.
    pub members: u64,
    pub erased_at: DateTime<Utc>,
    /// Rows rewritten or removed, by table.
    pub rows: BTreeMap<String, u64>,
}

/// A member and the members merged into it: (id, external id, profile).
type Person = Vec<(i64, String, Value)>;

impl Store {
    /// The member and every member merged into it (transitively).
    async fn person(&self, program: &LoadedProgram, external_id: &str) -> Result<Person> {
        let member = self.require_member(program, external_id).await?;
        let mut people: Person = Vec::new();
        let mut frontier = vec![member.id];
        while !frontier.is_empty() && people.len() < 10_000 {
            let ids = serde_json::to_string(&frontier)?;
            let mut rows: Vec<(i64, String, String, Option<i64>)> = with_pool!(self, |pool| {
                sqlx::query_as(if self.is_postgres() {
                    "SELECT id, external_id, profile::text, merged_into FROM members \
                     WHERE program_id = $1 AND (id IN (SELECT v::bigint FROM jsonb_array_elements_text($2::jsonb) AS p(v)) \
                        OR merged_into IN (SELECT v::bigint FROM jsonb_array_elements_text($2::jsonb) AS p(v)))"
                } else {
                    "SELECT id, external_id, profile, merged_into FROM members \
                     WHERE program_id = $1 AND (id IN (SELECT value FROM json_each($2)) \
                        OR merged_into IN (SELECT value FROM json_each($2)))"
                })
                .bind(program.id)
                .bind(&ids)
                .fetch_all(pool)
                .await?
            });
            // The members asked for before those merged into them, whatever order the
            // database answered in: the first is the member erased, whose pseudonym the
            // erasure returns.
            rows.sort_by_key(|r| (!frontier.contains(&r.0), r.0));
            frontier.clear();
            for (id, ext, profile, _) in rows {
                if people.iter().any(|(known, _, _)| *known == id) {
                    continue;
                }
                frontier.push(id);
                people.push((
                    id,
                    ext,
                    serde_json::from_str(&profile).unwrap_or(Value::Null),
                ));
            }
        }
        Ok(people)
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.db, crate::Db::Postgres(_))
    }

    /// Everything held about the member (and the members merged into it): one JSON
    /// document with a list of rows per table, in the same shape on both databases.
    /// Secrets (password, token and session hashes) are left out.
    pub async fn export_member(
        &self,
        program: &LoadedProgram,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Value> {
        let person = self.person(program, external_id).await?;
        let scope = Scope {
            ids: serde_json::to_string(&person.iter().map(|p| p.0).collect::<Vec<_>>())?,
            exts: serde_json::to_string(&person.iter().map(|p| &p.1).collect::<Vec<_>>())?,
            actors: serde_json::to_string(
                &person
                    .iter()
                    .map(|p| format!("member:{}", p.1))
                    .collect::<Vec<_>>(),
            )?,
            personal: "[]".into(),
            code: program.program.code.as_str(),
            pid: program.id,
        };
        let pg = self.is_postgres();
        let mut tables = Map::new();
        for s in SECTIONS {
            if !pg && POSTGRES_ONLY.contains(&s.table) {
                continue;
            }
            let (filter, binds) = render(s.filter, &scope, pg, 1);
            let raw: Option<String> = if pg {
                let sql = format!(
                    "SELECT coalesce(json_agg(t), '[]'::json)::text FROM (SELECT * FROM {} WHERE {filter}) t",
                    s.table
                );
                with_pool!(self, |pool| {
                    bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), &binds)
                        .fetch_one(pool)
                        .await?
                })
            } else {
                let columns: Vec<String> = with_pool!(self, |pool| {
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                        .bind(s.table)
                        .fetch_all(pool)
                        .await?
                });
                let pairs: Vec<String> = columns.iter().map(|c| format!("'{c}', {c}")).collect();
                let sql = format!(
                    "SELECT json_group_array(json_object({})) FROM {} WHERE {filter}",
                    pairs.join(", "),
                    s.table
                );
                with_pool!(self, |pool| {
                    bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), &binds)
                        .fetch_one(pool)
                        .await?
                })
            };
            let mut rows: Vec<Value> = serde_json::from_str(raw.as_deref().unwrap_or("[]"))?;
            for row in &mut rows {
                if let Value::Object(map) = row {
                    normalise_row(map, s.secret);
                }
            }
            tables.insert(s.table.to_owned(), Value::Array(rows));
        }
        Ok(serde_json::json!({
            "format": EXPORT_FORMAT,
            "program": program.program.code,
            "member": external_id,
            "exported_at": now.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "tables": tables,
        }))
    }

    /// Erases the member's personal data (and that of the members merged into it) in one
    /// transaction, under the members' locks: the profile, the sign-in, the free-text
    /// notes and every copy of the external id, the profile's values and the portal
    /// user's e-mail in journals, events, import rejections and the audit log. The
    /// member stays, closed, under a new pseudonymous external id (returned), with every
    /// journal, entry and balance as it was. Audited without personal data.
    pub async fn erase_member(
        &self,
        program: &LoadedProgram,
        external_id: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Erasure> {
        let person = self.person(program, external_id).await?;
        let code = program.program.code.as_str();
        let exts: Vec<&str> = person.iter().map(|p| p.1.as_str()).collect();
        let pseudonyms: Vec<String> = person
            .iter()
            .map(|_| format!("erased-{}", crate::members::referral_code().to_lowercase()))
            .collect();
        let scope = Scope {
            ids: serde_json::to_string(&person.iter().map(|p| p.0).collect::<Vec<_>>())?,
            exts: serde_json::to_string(&exts)?,
            actors: serde_json::to_string(
                &exts
                    .iter()
                    .map(|e| format!("member:{e}"))
                    .collect::<Vec<_>>(),
            )?,
            personal: String::new(),
            code,
            pid: program.id,
        };
        let pg = self.is_postgres();
        // The portal users' e-mail addresses are personal too (and are in the audit of
        // their creation).
        let (users_sql, users_binds) = render(
            "SELECT email FROM users WHERE program = {code} AND member IN {exts}",
            &scope,
            pg,
            1,
        );
        let emails: Vec<String> = with_pool!(self, |pool| {
            bind_all!(
                sqlx::query_scalar(sqlx::AssertSqlSafe(users_sql)),
                &users_binds
            )
            .fetch_all(pool)
            .await?
        });
        // Longest first, so a string containing another is replaced whole.
        let mut subs: Vec<Substitution> = Vec::new();
        for ((_, ext, profile), pseudonym) in person.iter().zip(&pseudonyms) {
            subs.push(Substitution {
                from: ext.clone(),
                to: pseudonym.clone(),
                id: true,
            });
            subs.push(Substitution {
                from: format!("member:{ext}"),
                to: format!("member:{pseudonym}"),
                id: true,
            });
            let mut strings = Vec::new();
            profile_strings(profile, false, &mut strings);
            for s in strings {
                let lower = s.to_lowercase();
                if lower != s {
                    subs.push(Substitution {
                        from: lower,
                        to: "[erased]".into(),
                        id: false,
                    });
                }
                subs.push(Substitution {
                    from: s,
                    to: "[erased]".into(),
                    id: false,
                });
            }
        }
        // A portal user's e-mail is a whole value where it stands (the user's audit).
        for e in emails {
            subs.push(Substitution {
                from: e,
                to: "[erased]".into(),
                id: true,
            });
        }
        subs.sort_by(|a, b| b.from.len().cmp(&a.from.len()).then(a.from.cmp(&b.from)));
        subs.dedup_by(|a, b| a.from == b.from);
        let scope = Scope {
            personal: serde_json::to_string(&subs.iter().map(|s| &s.from).collect::<Vec<_>>())?,
            ..scope
        };
        // A member erasing itself (the portal) is named by its pseudonym in the audit.
        let actor = match exts
            .iter()
            .position(|e| actor.name == format!("member:{e}"))
        {
            Some(i) => Actor {
                name: format!("member:{}", pseudonyms[i]),
                role: actor.role.clone(),
            },
            None => actor.clone(),
        };
        let mut audit = actor.entry(now, "member.erase", Some(code), Some(&pseudonyms[0]));
        let locks: Vec<i64> = {
            let mut keys: Vec<i64> = exts
                .iter()
                .map(|e| member_lock_key(program.id, e))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            keys
        };
        let mut rows: BTreeMap<String, u64> = BTreeMap::new();
        in_write_tx!(self, |tx, pg| {
            async {
                if pg {
                    for key in &locks {
                        sqlx::query("SELECT pg_advisory_xact_lock($1)")
                            .bind(key)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                // Copies first, while the external ids still name the rows to look at.
                for s in SCRUBS {
                    let mut columns: Vec<&str> = s.columns.to_vec();
                    columns.extend(s.cleared);
                    // Padded to four text columns.
                    let pad = ", NULL".repeat(4 - columns.len());
                    let template = format!(
                        "SELECT CAST({} AS BIGINT), CAST({} AS BIGINT), \
                         CAST(CASE WHEN ({}) THEN 1 ELSE 0 END AS BIGINT), {}{pad} FROM {} WHERE {}",
                        s.keys[0],
                        s.keys[1],
                        s.tied,
                        columns.join(", "),
                        s.table,
                        s.filter,
                    );
                    let (sql, binds) = render(&template, &scope, pg, 1);
                    type Found = (
                        i64,
                        i64,
                        i64,
                        Option<String>,
                        Option<String>,
                        Option<String>,
                        Option<String>,
                    );
                    let found: Vec<Found> =
                        bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &binds)
                            .fetch_all(&mut *tx)
                            .await?;
                    let sets: Vec<String> = columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("{c} = ${}", i + 1))
                        .collect();
                    let update = format!(
                        "UPDATE {} SET {} WHERE {} = ${} AND {} = ${}",
                        s.table,
                        sets.join(", "),
                        s.keys[0],
                        columns.len() + 1,
                        if s.keys[1] == "0" { "0" } else { s.keys[1] },
                        columns.len() + 2
                    );
                    for (k0, k1, tied, c0, c1, c2, c3) in found {
                        let tied = tied == 1;
                        let old = [c0, c1, c2, c3];
                        let mut new: Vec<Option<String>> = Vec::with_capacity(columns.len());
                        let mut changed = false;
                        for (i, c) in columns.iter().enumerate() {
                            let value = old[i].clone();
                            if s.cleared.contains(c) && tied {
                                changed |= value.is_some();
                                new.push(None);
                            } else {
                                match value.as_deref().and_then(|v| scrub_text(v, &subs, tied)) {
                                    Some(next) => {
                                        changed = true;
                                        new.push(Some(next));
                                    }
                                    None => new.push(value),
                                }
                            }
                        }
                        if !changed {
                            continue;
                        }
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(update.clone()));
                        for v in new {
                            q = q.bind(v);
                        }
                        let k1 = if s.keys[1] == "0" { 0 } else { k1 };
                        q.bind(k0).bind(k1).execute(&mut *tx).await?;
                        *rows.entry(s.table.to_owned()).or_default() += 1;
                    }
                }
                // The sign-in, the search terms, the sessions and the portal users.
                for (table, filter) in [
                    ("member_terms", "DELETE FROM member_terms WHERE member_id IN {ids}"),
                    (
                        "member_consents",
                        "DELETE FROM member_consents WHERE member_id IN {ids}",
                    ),
                    (
                        "member_credentials",
                        "DELETE FROM member_credentials WHERE member_id IN {ids}",
                    ),
                    ("signin_links", "DELETE FROM signin_links WHERE member_id IN {ids}"),
                    (
                        "web_sessions",
                        "DELETE FROM web_sessions WHERE (program = {code} AND member IN {exts}) \
                         OR user_id IN (SELECT id FROM users WHERE program = {code} AND member IN {exts})",
                    ),
                    ("users", "DELETE FROM users WHERE program = {code} AND member IN {exts}"),
                ] {
                    let (sql, binds) = render(filter, &scope, pg, 1);
                    let done = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), &binds)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if done > 0 {
                        *rows.entry(table.to_owned()).or_default() += done;
                    }
                }
                for ((id, ext, _), pseudonym) in person.iter().zip(&pseudonyms) {
                    // The member's tokens stop working and name the pseudonym.
                    let tokens = sqlx::query(
                        "UPDATE api_tokens SET member = $1, name = $2, \
                         revoked_at = coalesce(revoked_at, $3) WHERE program = $4 AND member = $5",
                    )
                    .bind(pseudonym)
                    .bind(format!("member:{pseudonym}"))
                    .bind(At(now))
                    .bind(code)
                    .bind(ext)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if tokens > 0 {
                        *rows.entry("api_tokens".into()).or_default() += tokens;
                    }
                    if pg {
                        // The member's key follows its external id (a delete and an
                        // insert: a distributed table's key column is never updated).
                        sqlx::query(
                            "WITH d AS (DELETE FROM member_keys k USING members m \
                                        WHERE m.id = $2 AND k.program_id = m.program_id AND k.external_id = m.external_id \
                                        RETURNING k.program_id) \
                             INSERT INTO member_keys (program_id, external_id, member_id) SELECT program_id, $1, $2 FROM d",
                        )
                        .bind(pseudonym)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    sqlx::query(
                        "UPDATE members SET external_id = $1, profile = '{}', status = 'closed', \
                         erased_at = $2, flagged = NULL WHERE id = $3",
                    )
                    .bind(pseudonym)
                    .bind(At(now))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    *rows.entry("members".into()).or_default() += 1;
                }
                audit.after = Some(serde_json::json!({
                    "members": person.len(),
                    "rows": rows,
                }));
                let entry: &AuditEntry = &audit;
                crate::access::insert_audit!(tx, entry);
                Ok::<_, StoreError>(())
            }
            .await
        })?;
        Ok(Erasure {
            member: pseudonyms[0].clone(),
            members: person.len() as u64,
            erased_at: now,
            rows,
        })
    }

    /// Whether the member's personal data was erased (an erased member stays closed).
    pub(crate) async fn member_erased(&self, id: i64) -> Result<bool> {
        let at: Option<Option<At>> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT erased_at FROM members WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(matches!(at, Some(Some(_))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs() -> Vec<Substitution> {
        vec![
            Substitution {
                from: "ann@example.org".into(),
                to: "[erased]".into(),
                id: false,
            },
            Substitution {
                from: "m".into(),
                to: "erased-x".into(),
                id: true,
            },
            Substitution {
                from: "C-1000".into(),
                to: "erased-y".into(),
                id: true,
            },
        ]
    }

    #[test]
    fn json_keeps_its_shape_and_short_ids_are_replaced_only_whole() {
        let doc = r#"{"member":"m","from":"m","note":"mail ann@example.org","amount":"m2","profile":{"name":"Ann"}}"#;
        let out: Value = serde_json::from_str(
            &scrub_text(doc, &subs(), true).expect("the test fixture is valid"),
        )
        .expect("the test fixture is valid");
        assert_eq!(
            out,
            serde_json::json!({"member": "erased-x", "from": "erased-x",
                "note": "mail [erased]", "amount": "m2", "profile": {}})
        );
        assert_eq!(scrub_text("no personal data here", &subs(), true), None);
        assert_eq!(
            scrub_text("write to ann@example.org", &subs(), true).as_deref(),
            Some("write to [erased]")
        );
    }

    #[test]
    fn another_members_rows_lose_only_the_members_whole_id() {
        let doc = r#"{"member":"C-10001","from":"C-1000","note":"ann@example.org","profile":{"name":"Bo"}}"#;
        let out: Value = serde_json::from_str(
            &scrub_text(doc, &subs(), false).expect("the test fixture is valid"),
        )
        .expect("the test fixture is valid");
        assert_eq!(
            out,
            serde_json::json!({"member": "C-10001", "from": "erased-y",
                "note": "ann@example.org", "profile": {"name": "Bo"}})
        );
        assert_eq!(scrub_text("C-10001 and C-1000", &subs(), false), None);
    }

    #[test]
    fn only_identifying_profile_fields_are_looked_for() {
        let mut found = Vec::new();
        profile_strings(
            &serde_json::json!({"name": "Ann Smith", "language": "en", "tier_wish": "gold",
                "contact": {"email": "a@b.org", "phone_number": "+44 20"}, "note": "x@y.z"}),
            false,
            &mut found,
        );
        found.sort();
        assert_eq!(found, ["+44 20", "Ann Smith", "a@b.org", "x@y.z"]);
    }

    #[test]
    fn rows_read_the_same_on_both_dialects() {
        let mut sqlite: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "occurred_at": 1_767_225_600_000_000_i64, "document": "{\"a\":1}", "pending": 1,
            "password_hash": "x"}))
        .expect("the test fixture is valid");
        let mut pg: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "occurred_at": "2026-01-01T00:00:00+00:00", "document": "{\"a\":1}", "pending": true}))
        .expect("the test fixture is valid");
        normalise_row(&mut sqlite, &["password_hash"]);
        normalise_row(&mut pg, &[]);
        assert_eq!(sqlite, pg);
        assert_eq!(pg["occurred_at"], "2026-01-01T00:00:00Z");
    }
}
