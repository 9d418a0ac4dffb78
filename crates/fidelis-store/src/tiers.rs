//! Tier standing: reading a member's tiers and benefits, and an agent's manual tier
//! assignment (audited). Upgrades and assessments happen with journals and jobs
//! (`engine.rs`); the rules are the core's (`fidelis_core::tiers`).

use chrono::{DateTime, Utc};
use fidelis_core::program::Program;
use fidelis_core::tiers::{Benefit, MemberTiers, TierChange};

use crate::access::Actor;
use crate::engine::LoadedProgram;
use crate::error::{Result, StoreError};
use crate::rows::{AccountRow, LedgerTx, TierRow, TierSave};
use crate::views::in_read_tx;
use crate::{Db, Store, in_ledger_tx, postgres, sqlite};

/// A member's standing in one tier group, as of an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct TierStanding {
    pub group: String,
    pub group_name: String,
    pub tier: String,
    pub tier_name: String,
    pub since: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
    pub next_assessment_at: DateTime<Utc>,
    pub grace_until: Option<DateTime<Utc>>,
    /// What the group counts: `points`, `spend` or `activities`.
    pub measure: &'static str,
    /// The measure so far in the current period (rolling: the current window).
    pub progress: i64,
    /// The next tier up and its threshold.
    pub next_tier: Option<(String, i64)>,
    pub benefits: Vec<Benefit>,
}

/// Available balances per program currency.
pub(crate) fn balances_of(program: &Program, accounts: &[AccountRow]) -> Vec<i64> {
    program
        .currencies
        .iter()
        .map(|c| {
            accounts
                .iter()
                .find(|a| a.currency == c.code.as_str())
                .map_or(0, |a| a.available)
        })
        .collect()
}

/// The standing stored in `row`, or a fresh one for a member without (started from the
/// member's available `balances`, per program currency).
pub(crate) fn standing(
    program: &Program,
    row: &TierRow,
    balances: &[i64],
    now: DateTime<Utc>,
) -> Result<MemberTiers> {
    Ok(match &row.state {
        Some(state) => {
            let mut tiers: MemberTiers = serde_json::from_str(state)?;
            tiers.changed = false;
            tiers
        }
        None => MemberTiers::start(program, row.enrolled_at.unwrap_or(now), balances, now),
    })
}

impl Store {
    /// The member's standing in every tier group as of `now` (assessments due by then
    /// applied, as the member's next journal would), with the benefits of each tier.
    pub async fn tier_standing(
        &self,
        program: &LoadedProgram,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TierStanding>> {
        let member = self.require_member(program, external_id).await?;
        let (rows, accounts): (Vec<TierRow>, Vec<AccountRow>) = in_read_tx!(self, |tx| {
            let rows = tx.load_tiers(&[member.id]).await?;
            let accounts = tx.load_accounts(&[member.id]).await?;
            (rows, accounts)
        });
        let p = &program.program;
        let Some(row) = rows.first() else {
            return Err(StoreError::UnknownMember(external_id.to_owned()));
        };
        let mut balances = balances_of(p, &accounts);
        let mut tiers = standing(p, row, &balances, now)?;
        if tiers.is_due(now) {
            let assessed = tiers.assess(p, &balances, now);
            for (currency, _) in assessed.resets {
                balances[currency.index()] = 0;
            }
        }
        let current = tiers.current(p);
        Ok(p.tier_groups
            .iter()
            .zip(current)
            .enumerate()
            .filter_map(|(g, (group, t))| {
                let status = tiers.status(group.code.as_str())?;
                let tier = &group.tiers[t];
                Some(TierStanding {
                    group: group.code.to_string(),
                    group_name: group.name.clone(),
                    tier: tier.code.to_string(),
                    tier_name: tier.name.clone(),
                    since: status.since,
                    valid_until: status.valid_until,
                    next_assessment_at: status.next_assessment_at,
                    grace_until: status.grace_until,
                    measure: group.measure.name(),
                    progress: tiers.progress(p, g, &balances, now),
                    next_tier: group
                        .tiers
                        .get(t + 1)
                        .map(|n| (n.code.to_string(), n.threshold)),
                    benefits: tier.benefits.clone(),
                })
            })
            .collect())
    }

    /// Gives a member a tier by hand (an agent's decision, with the reason audited). The
    /// tier is kept at least until `valid_until`, or until the end of the current
    /// period.
    #[allow(clippy::too_many_arguments)]
    pub async fn assign_tier(
        &self,
        program: &LoadedProgram,
        external_id: &str,
        group: &str,
        tier: &str,
        valid_until: Option<DateTime<Utc>>,
        reason: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<TierChange> {
        let p = &program.program;
        let Some(g) = p.tier_groups.iter().find(|g| g.code.as_str() == group) else {
            return Err(StoreError::Refused(
                "unknown_tier_group",
                format!("the program has no tier group {group:?}"),
            ));
        };
        let Some(t) = g.tiers.iter().position(|x| x.code.as_str() == tier) else {
            return Err(StoreError::Refused(
                "unknown_tier",
                format!("tier group {group:?} has no tier {tier:?}"),
            ));
        };
        if valid_until.is_some_and(|v| v <= now) {
            return Err(StoreError::Refused(
                "invalid_validity",
                "valid_until must be in the future".into(),
            ));
        }
        let member = self.require_member(program, external_id).await?;
        let key = crate::engine::member_lock_key(program.id, external_id);
        let code = p.code.as_str();
        in_ledger_tx!(self, |tx| {
            async {
                tx.lock_members(&[key]).await?;
                let rows = tx.load_tiers(&[member.id]).await?;
                let accounts = tx.load_accounts(&[member.id]).await?;
                let row = rows
                    .first()
                    .ok_or_else(|| StoreError::UnknownMember(external_id.to_owned()))?;
                let mut tiers = standing(p, row, &balances_of(p, &accounts), now)?;
                let change = tiers.assign(p, g, t, valid_until, now);
                tx.save_tiers(
                    program.id,
                    &[TierSave {
                        member_id: member.id,
                        state: serde_json::to_string(&tiers)?,
                        next_due_at: tiers.next_due(),
                    }],
                )
                .await?;
                let mut audit = actor.entry(now, "tier.assign", Some(code), Some(external_id));
                audit.before = Some(serde_json::json!({
                    "group": group,
                    "tier": change.from.as_ref().map(|c| c.as_str()),
                }));
                audit.after = Some(serde_json::json!({
                    "group": group,
                    "tier": tier,
                    "reason": reason,
                    "valid_until": change.valid_until,
                }));
                tx.insert_audits(&[audit]).await?;
                Ok::<_, StoreError>(change)
            }
            .await
        })
    }
}
