//! Groups (households): a group is a member record of its own whose ledger holds the points
//! its members pool. A member belongs to at most one group and gives it `share_percent` of
//! the redeemable points each accrual credits (moved in the accrual's transaction, with
//! their expiry; see `engine::Batch::pool_share`). The group's `redeem` rule says who may
//! spend: the `owner` only, or `any_member`.

use chrono::{DateTime, Utc};
use fidelis_core::ids::ExternalId;
use fidelis_core::journal::{Journal, JournalDocument};

use crate::access::Actor;
use crate::engine::{JournalResult, LoadedProgram, Prepared};
use crate::error::{Result, StoreError};
use crate::members::Enrollment;
use crate::{Db, Store};

/// Who may spend a group's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemRule {
    Owner,
    AnyMember,
}

impl RedeemRule {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Self::Owner),
            "any_member" => Some(Self::AnyMember),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::AnyMember => "any_member",
        }
    }
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub group: String,
    pub share_percent: i32,
    pub redeem: RedeemRule,
    pub owner: String,
    pub members: Vec<String>,
}

impl Store {
    /// Creates a group (a member record `group`, with its own balances) owned by `owner`,
    /// who joins it. Audited. The group's record points at itself (`group_id = id`): that
    /// is how a journal naming it through a member route is told apart and refused
    /// (`member_is_group`) — its points are spent only by [`Store::redeem_from_group`].
    #[allow(clippy::too_many_arguments)]
    pub async fn create_group(
        &self,
        program: &LoadedProgram,
        group: &ExternalId,
        name: &str,
        share_percent: i32,
        redeem: RedeemRule,
        owner: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<GroupView> {
        if !(1..=100).contains(&share_percent) {
            return Err(StoreError::Refused(
                "invalid_group",
                "share_percent must be 1 to 100".into(),
            ));
        }
        let owner_view = self.require_member(program, owner).await?;
        self.refuse_grouped(&owner_view)?;
        let view = self
            .enroll(
                program,
                &Enrollment {
                    external_id: group.clone(),
                    profile: serde_json::json!({"name": name, "group": true}),
                    enrolled_at: now,
                },
                now,
            )
            .await?;
        match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query("INSERT INTO member_groups (group_id, program_id, share_percent, redeem, owner_id) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .bind(view.id).bind(program.id).bind(share_percent).bind(redeem.name()).bind(owner_view.id)
                    .execute(&mut *tx).await?;
                sqlx::query("UPDATE members SET group_id = ?1 WHERE id = ?2 AND group_id IS NULL")
                    .bind(view.id)
                    .bind(owner_view.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE members SET group_id = id WHERE id = ?1")
                    .bind(view.id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO member_groups (group_id, program_id, share_percent, redeem, owner_id) VALUES ($1, $2, $3, $4, $5)")
                    .bind(view.id).bind(program.id).bind(share_percent).bind(redeem.name()).bind(owner_view.id)
                    .execute(&mut *tx).await?;
                sqlx::query("UPDATE members SET group_id = $1 WHERE id = $2 AND group_id IS NULL")
                    .bind(view.id)
                    .bind(owner_view.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE members SET group_id = id WHERE id = $1")
                    .bind(view.id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        let mut audit = actor.entry(
            now,
            "group.create",
            Some(program.program.code.as_str()),
            Some(group.as_str()),
        );
        audit.after = Some(
            serde_json::json!({"share_percent": share_percent, "redeem": redeem.name(), "owner": owner}),
        );
        self.append_audit(&audit).await?;
        self.require_group(program, group.as_str()).await
    }

    fn refuse_grouped(&self, member: &crate::MemberView) -> Result<()> {
        if member.merged_into.is_some() {
            return Err(StoreError::Refused(
                "member_merged",
                format!("member {:?} was merged into another", member.external_id),
            ));
        }
        Ok(())
    }

    /// Adds a member to a group (a member belongs to at most one). Audited.
    pub async fn join_group(
        &self,
        program: &LoadedProgram,
        group: &str,
        member: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<GroupView> {
        let g = self.require_group(program, group).await?;
        let m = self.require_member(program, member).await?;
        self.refuse_grouped(&m)?;
        let group_id = self.require_member(program, group).await?.id;
        if m.id == group_id {
            return Err(StoreError::Refused(
                "invalid_group",
                "a group cannot join itself".into(),
            ));
        }
        let changed = match &self.db {
            Db::Sqlite(pool) => sqlx::query("UPDATE members SET group_id = ?1 WHERE id = ?2 AND group_id IS NULL AND id NOT IN (SELECT group_id FROM member_groups)")
                .bind(group_id).bind(m.id).execute(pool).await?.rows_affected(),
            Db::Postgres(pool) => sqlx::query("UPDATE members SET group_id = $1 WHERE id = $2 AND group_id IS NULL AND id NOT IN (SELECT group_id FROM member_groups)")
                .bind(group_id).bind(m.id).execute(pool).await?.rows_affected(),
        };
        if changed == 0 && !g.members.iter().any(|x| x == member) {
            return Err(StoreError::Refused(
                "already_grouped",
                format!("member {member:?} belongs to another group (or is one)"),
            ));
        }
        let mut audit = actor.entry(
            now,
            "group.join",
            Some(program.program.code.as_str()),
            Some(group),
        );
        audit.after = Some(serde_json::json!({"member": member}));
        self.append_audit(&audit).await?;
        self.require_group(program, group).await
    }

    /// Whether the program has a group (household): its members' journals then meet in
    /// the group's ledger, so the order between them matters.
    pub async fn has_groups(&self, program: &LoadedProgram) -> Result<bool> {
        let found: Option<i64> = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT group_id FROM member_groups WHERE program_id = ?1 LIMIT 1",
                )
                .bind(program.id)
                .fetch_optional(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT group_id FROM member_groups WHERE program_id = $1 LIMIT 1",
                )
                .bind(program.id)
                .fetch_optional(pool)
                .await?
            }
        };
        Ok(found.is_some())
    }

    /// A group with its members, or [`StoreError::Refused`] `unknown_group`.
    pub async fn require_group(&self, program: &LoadedProgram, group: &str) -> Result<GroupView> {
        type Row = (i64, i32, String, String);
        let row: Option<Row> = match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT g.group_id, g.share_percent, g.redeem, o.external_id FROM member_groups g \
                 JOIN members m ON m.id = g.group_id JOIN members o ON o.id = g.owner_id \
                 WHERE m.program_id = ?1 AND m.external_id = ?2",
            )
            .bind(program.id)
            .bind(group)
            .fetch_optional(pool)
            .await?,
            Db::Postgres(pool) => sqlx::query_as(
                "SELECT g.group_id, g.share_percent, g.redeem, o.external_id FROM member_groups g \
                 JOIN members m ON m.id = g.group_id JOIN members o ON o.id = g.owner_id \
                 WHERE m.program_id = $1 AND m.external_id = $2",
            )
            .bind(program.id)
            .bind(group)
            .fetch_optional(pool)
            .await?,
        };
        let Some((id, share_percent, redeem, owner)) = row else {
            return Err(StoreError::Refused(
                "unknown_group",
                format!("no group {group:?} in this program"),
            ));
        };
        let members: Vec<String> = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT external_id FROM members WHERE group_id = ?1 AND id <> group_id ORDER BY external_id",
                )
                .bind(id)
                .fetch_all(pool)
                .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT external_id FROM members WHERE group_id = $1 AND id <> group_id ORDER BY external_id",
                )
                .bind(id)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(GroupView {
            group: group.to_owned(),
            share_percent,
            redeem: RedeemRule::parse(&redeem)
                .ok_or_else(|| StoreError::Inconsistent(format!("group redeem rule {redeem:?}")))?,
            owner,
            members,
        })
    }

    /// Spends the group's points for `member`, if the group's rule lets them: a redemption
    /// journal on the group's ledger (idempotent on `external_id`, like any journal).
    #[allow(clippy::too_many_arguments)]
    pub async fn redeem_from_group(
        &self,
        program: &LoadedProgram,
        group: &str,
        member: &str,
        currency: &str,
        points: i64,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> Result<JournalResult> {
        let g = self.require_group(program, group).await?;
        let allowed = match g.redeem {
            RedeemRule::Owner => g.owner == member,
            RedeemRule::AnyMember => g.members.iter().any(|m| m == member),
        };
        if !allowed {
            return Err(StoreError::Refused(
                "not_allowed_by_group",
                format!(
                    "group {group:?} lets {} redeem; {member:?} may not",
                    match g.redeem {
                        RedeemRule::Owner => "only its owner",
                        RedeemRule::AnyMember => "its members",
                    }
                ),
            ));
        }
        let doc = JournalDocument {
            external_id: Some(external_id.to_owned()),
            member: Some(group.to_owned()),
            kind: Some("redemption".into()),
            occurred_at: Some(now.to_rfc3339()),
            currency: Some(currency.to_owned()),
            points: Some(points),
            attributes: Some(
                [("redeemed_by".to_owned(), serde_json::Value::from(member))]
                    .into_iter()
                    .collect(),
            ),
            ..JournalDocument::default()
        };
        let journal = Journal::parse(&doc, &program.program)
            .map_err(|e| StoreError::Refused(e.code(), e.to_string()))?;
        let mut prepared = Prepared::new(journal, &program.program)?.with_time_filled();
        prepared.for_group = true;
        let mut results = self.post_journals(program, &[prepared], now, None).await?;
        results
            .pop()
            .ok_or_else(|| StoreError::Inconsistent("a redemption answered nothing".into()))
    }
}
