//! Authentication and authorization.
//!
//! Callers present a bearer token. Tokens are random (32 bytes), so the store keeps only
//! their SHA-256; user passwords (for the web pages) are hashed with argon2 instead. A
//! token has a role, which grants permissions, optionally narrowed by the token's scopes,
//! and may be bound to a program, a partner (partner role) or a member (member role).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use fidelis_store::{Actor, Store, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// What a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    ProgramManager,
    Agent,
    Partner,
    Member,
}

impl Role {
    pub const ALL: [Self; 5] = [
        Self::Admin,
        Self::ProgramManager,
        Self::Agent,
        Self::Partner,
        Self::Member,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::ProgramManager => "program_manager",
            Self::Agent => "agent",
            Self::Partner => "partner",
            Self::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == s)
    }

    /// What the role may do (before scope checks).
    pub fn grants(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Self::Admin => true,
            Self::ProgramManager => !matches!(p, TokensManage),
            Self::Agent => matches!(
                p,
                ProgramsRead
                    | MembersRead
                    | MembersWrite
                    | JournalsRead
                    | Redeem
                    | Adjust
                    | Cancel
                    | AuditRead
                    | JoinPromotions
                    | ClaimsWrite
            ),
            // Partners send earn journals and take redemptions, and read their own journals.
            Self::Partner => matches!(p, JournalsWrite | JournalsRead | Redeem),
            // Members read themselves and spend their own points.
            // Members read themselves, spend their own points and join promotions.
            // Members also file missing-points claims for themselves.
            Self::Member => matches!(
                p,
                MembersRead | JournalsRead | Redeem | JoinPromotions | ClaimsWrite
            ),
        }
    }
}

/// A thing a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ProgramsRead,
    ProgramsWrite,
    MembersRead,
    MembersWrite,
    JournalsRead,
    JournalsWrite,
    Redeem,
    Adjust,
    Cancel,
    JobsRun,
    AuditRead,
    TokensManage,
    JoinPromotions,
    /// File a missing-points claim.
    ClaimsWrite,
}

impl Permission {
    pub const ALL: [Self; 14] = [
        Self::ProgramsRead,
        Self::ProgramsWrite,
        Self::MembersRead,
        Self::MembersWrite,
        Self::JournalsRead,
        Self::JournalsWrite,
        Self::Redeem,
        Self::Adjust,
        Self::Cancel,
        Self::JobsRun,
        Self::AuditRead,
        Self::TokensManage,
        Self::JoinPromotions,
        Self::ClaimsWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ProgramsRead => "programs:read",
            Self::ProgramsWrite => "programs:write",
            Self::MembersRead => "members:read",
            Self::MembersWrite => "members:write",
            Self::JournalsRead => "journals:read",
            Self::JournalsWrite => "journals:write",
            Self::Redeem => "redemptions:write",
            Self::Adjust => "adjustments:write",
            Self::Cancel => "cancellations:write",
            Self::JobsRun => "jobs:run",
            Self::AuditRead => "audit:read",
            Self::TokensManage => "tokens:manage",
            Self::JoinPromotions => "promotions:join",
            Self::ClaimsWrite => "claims:write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (what the audit log records).
    pub name: String,
    pub role: Role,
    pub program: Option<String>,
    pub partner: Option<String>,
    pub member: Option<String>,
    /// Permissions the token is limited to, if any.
    pub scopes: Option<Vec<Permission>>,
}

impl Caller {
    fn from_record(record: &TokenRecord) -> Result<Self, ApiError> {
        let role = Role::parse(&record.role).ok_or_else(ApiError::internal)?;
        let scopes = record.scopes.as_deref().map(|s| {
            s.split(',')
                .filter_map(|p| Permission::parse(p.trim()))
                .collect()
        });
        Ok(Self {
            name: record.name.clone(),
            role,
            program: record.program.clone(),
            partner: record.partner.clone(),
            member: record.member.clone(),
            scopes,
        })
    }

    /// Refuses unless the caller may do `p` in `program`.
    pub fn require(&self, p: Permission, program: Option<&str>) -> Result<(), ApiError> {
        if !self.has(p) {
            return Err(ApiError::forbidden(format!(
                "a {} token may not do {}",
                self.role.name(),
                p.name()
            )));
        }
        if let (Some(own), Some(asked)) = (&self.program, program)
            && own != asked
        {
            return Err(ApiError::forbidden(format!(
                "this token is limited to program {own:?}"
            )));
        }
        Ok(())
    }

    /// Whether the caller may do `p` (in some program): its role grants it and its scopes,
    /// if any, include it.
    pub fn has(&self, p: Permission) -> bool {
        self.role.grants(p) && self.scopes.as_ref().is_none_or(|s| s.contains(&p))
    }

    /// Refuses to create a token or user with rights the caller lacks: a role or scopes
    /// granting something the caller may not do, or a wider program, partner or member
    /// than the caller's own. Nothing a caller creates has more rights than itself.
    pub fn may_delegate(
        &self,
        role: Role,
        program: Option<&str>,
        partner: Option<&str>,
        member: Option<&str>,
        scopes: Option<&[Permission]>,
    ) -> Result<(), ApiError> {
        for p in Permission::ALL {
            let granted = role.grants(p) && scopes.is_none_or(|s| s.contains(&p));
            if granted && !self.has(p) {
                return Err(ApiError::forbidden(format!(
                    "this token may not do {}, so it cannot give that right to a {} token or user",
                    p.name(),
                    role.name()
                )));
            }
        }
        let limits = [
            ("program", self.program.as_deref(), program),
            ("partner", self.partner.as_deref(), partner),
            ("member", self.member.as_deref(), member),
        ];
        for (what, own, asked) in limits {
            if let Some(own) = own
                && asked != Some(own)
            {
                return Err(ApiError::forbidden(format!(
                    "this token is limited to {what} {own:?}: what it creates must be limited to it too"
                )));
            }
        }
        Ok(())
    }

    /// Whether the caller may see a token or user limited to `program` (a caller limited
    /// to a program sees only what is limited to the same program).
    pub fn sees_program(&self, program: Option<&str>) -> bool {
        self.program
            .as_deref()
            .is_none_or(|own| program == Some(own))
    }

    /// Refuses a member-scoped caller acting on another member.
    pub fn require_member(&self, member: &str) -> Result<(), ApiError> {
        match (self.role, &self.member) {
            (Role::Member, Some(own)) if own == member => Ok(()),
            (Role::Member, _) => Err(ApiError::forbidden(
                "a member token may only act on its own member",
            )),
            (Role::Partner, _) => Err(ApiError::forbidden("a partner token may not read members")),
            _ => Ok(()),
        }
    }

    /// Refuses a partner-scoped caller touching another partner's journal.
    pub fn require_partner(&self, partner: Option<&str>) -> Result<(), ApiError> {
        match (self.role, &self.partner) {
            (Role::Partner, Some(own)) if partner == Some(own.as_str()) => Ok(()),
            (Role::Partner, _) => Err(ApiError::forbidden(
                "a partner token may only act on its own partner's journals",
            )),
            _ => Ok(()),
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            name: self.name.clone(),
            role: self.role.name().to_owned(),
        }
    }
}

/// A new random token: `fid_` and 32 random bytes, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "fid_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a user's password (argon2id, random salt, PHC string).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    use argon2::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| ApiError::internal())
}

/// Runs argon2 work (a hash or a check) on a blocking thread, at most one per core at a
/// time: each takes about 19 MiB and tens of milliseconds of CPU, and a flood of sign-ins
/// must neither hold the runtime's threads (on SQLite `serve` has one) nor grow the blocking
/// pool to hundreds of threads. `None` if the work panicked.
pub async fn argon2_apart<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let permits = PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        )
    });
    let _permit = permits.acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// Whether `password` matches a stored argon2 hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::password_hash::phc::PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Token lookups, cached for a few seconds: every request needs one, and a database round
/// trip for each would cost the API a tenth of its throughput. A revoked token stops
/// working within `TTL`.
///
/// Tokens nobody ever issued cost no database read: the cache keeps a fingerprint of every
/// token's hash (8 bytes each; a million tokens are a few MB), learnt incrementally — only
/// tokens created since the last look are read, at most once per `TTL` however many
/// unknown tokens arrive. A token without a fingerprint is unknown; one with a fingerprint
/// is read from the database (a revoked token, or a rare fingerprint collision, is then
/// refused there). A token created by another process works here within `TTL`.
#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<String, (Option<Arc<Caller>>, Instant)>>,
    known: RwLock<KnownTokens>,
    /// One incremental read of new tokens at a time.
    learning: tokio::sync::Mutex<()>,
}

/// Fingerprints of every token's hash, and how far (by token id) and when they were read.
#[derive(Default)]
struct KnownTokens {
    fingerprints: std::collections::HashSet<u64>,
    up_to_id: i64,
    read_at: Option<Instant>,
}

/// The first 8 bytes of a token hash (hex), as a number.
fn fingerprint(hash: &str) -> u64 {
    hash.get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_default()
}

impl TokenCache {
    pub const TTL: Duration = Duration::from_secs(5);
    const MAX_ENTRIES: usize = 10_000;

    async fn caller(&self, store: &Store, token: &str) -> Result<Option<Arc<Caller>>, ApiError> {
        let hash = token_hash(token);
        if let Ok(entries) = self.entries.read()
            && let Some((caller, at)) = entries.get(&hash)
            && at.elapsed() < Self::TTL
        {
            return Ok(caller.clone());
        }
        if !self.may_exist(store, &hash).await? {
            self.remember(hash, None);
            return Ok(None);
        }
        let record = store.token_by_hash(&hash).await?;
        let caller = record
            .as_ref()
            .map(Caller::from_record)
            .transpose()?
            .map(Arc::new);
        self.remember(hash, caller.clone());
        Ok(caller)
    }

    fn remember(&self, hash: String, caller: Option<Arc<Caller>>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= Self::MAX_ENTRIES {
                entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
                if entries.len() >= Self::MAX_ENTRIES {
                    // A flood of distinct tokens within one TTL: start over.
                    entries.clear();
                }
            }
            entries.insert(hash, (caller, Instant::now()));
        }
    }

    /// What the fingerprints say of a hash while they are fresh: `Some(false)` when no
    /// token has it.
    fn fresh_answer(&self, hash: &str) -> Option<bool> {
        let known = self.known.read().ok()?;
        if known.fingerprints.contains(&fingerprint(hash)) {
            return Some(true);
        }
        known
            .read_at
            .is_some_and(|at| at.elapsed() < Self::TTL)
            .then_some(false)
    }

    /// Whether a token with this hash may exist, learning new tokens when the fingerprints
    /// are older than `TTL`.
    async fn may_exist(&self, store: &Store, hash: &str) -> Result<bool, ApiError> {
        if let Some(answer) = self.fresh_answer(hash) {
            return Ok(answer);
        }
        let _learning = self.learning.lock().await;
        if let Some(answer) = self.fresh_answer(hash) {
            return Ok(answer);
        }
        let after = self.known.read().map(|k| k.up_to_id).unwrap_or_default();
        let new = store.token_hashes_after(after).await?;
        let mut known = self.known.write().map_err(|_| ApiError::internal())?;
        for (id, token_hash) in new {
            known.fingerprints.insert(fingerprint(&token_hash));
            known.up_to_id = known.up_to_id.max(id);
        }
        known.read_at = Some(Instant::now());
        Ok(known.fingerprints.contains(&fingerprint(hash)))
    }

    /// Whether no token has this hash, by fingerprints still fresh — without a database
    /// read. The rate limiter puts such requests into one shared bucket, so that made-up
    /// tokens neither escape the limit nor each grow its table.
    pub fn surely_unknown(&self, hash: &str) -> bool {
        self.fresh_answer(hash) == Some(false)
    }

    /// A token created in this process: known at once, without waiting for the next read.
    pub fn learn(&self, hash: &str) {
        if let Ok(mut known) = self.known.write() {
            known.fingerprints.insert(fingerprint(hash));
        }
    }

    /// Forgets cached lookups (after a revocation in this process): the next lookup reads
    /// again, and learns new tokens at once.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
        if let Ok(mut known) = self.known.write() {
            known.read_at = None;
        }
    }
}

/// The token of an `Authorization` header value: the `Bearer` scheme, in any case (RFC 9110
/// makes auth schemes case-insensitive), then the token, without surrounding white space.
pub fn bearer_token(header: &str) -> Option<&str> {
    let header = header.trim_start();
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case("bearer") || !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(rest.trim()).filter(|t| !t.is_empty() && t.len() <= 256 && !t.contains([' ', '\t']))
}

impl FromRequestParts<AppState> for Arc<Caller> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <token>`"))?;
        let token = header.to_str().ok().and_then(bearer_token).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
        })?;
        state
            .tokens
            .caller(&state.store, token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Argon2 work runs at most one per core at a time, however many ask at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn argon2_work_runs_at_most_one_per_core() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..cores * 4)
            .map(|_| {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                tokio::spawn(argon2_apart(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for task in tasks {
            assert!(task.await.expect("the task").is_some());
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            most >= 1 && most <= cores,
            "{most} at once on {cores} cores"
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER  abc ", "BeArEr\tabc"] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        for header in ["Bearerabc", "Basic abc", "Bearer ", "Bearer a b", ""] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("fid_") && a.len() > 40);
        assert_eq!(token_hash(&a).len(), 64);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("correct horse").expect("a password hashes");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn scopes_narrow_a_role() {
        let caller = Caller {
            name: "pos".into(),
            role: Role::Admin,
            program: Some("shop".into()),
            partner: None,
            member: None,
            scopes: Some(vec![Permission::JournalsWrite]),
        };
        assert!(
            caller
                .require(Permission::JournalsWrite, Some("shop"))
                .is_ok()
        );
        assert!(
            caller
                .require(Permission::ProgramsWrite, Some("shop"))
                .is_err()
        );
        assert!(
            caller
                .require(Permission::JournalsWrite, Some("other"))
                .is_err()
        );
    }
}
