-- Erasure (see crates/fidelis-store/src/personal_data.rs): when a member's personal data
-- was removed. The member's row stays, under a pseudonymous external id, so its journals,
-- balances and partner figures stay whole. Keep in step with ../sqlite/0025_personal_data.sql.
ALTER TABLE members ADD COLUMN erased_at TIMESTAMPTZ;
