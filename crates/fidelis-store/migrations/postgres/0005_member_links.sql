-- Links between members: a merged member points at its survivor (journals for it go
-- there); a member's referral code, and who referred them. Keep in step with
-- ../sqlite/0005_member_links.sql.
ALTER TABLE members ADD COLUMN merged_into BIGINT;
ALTER TABLE members ADD COLUMN referral_code TEXT;
ALTER TABLE members ADD COLUMN referred_by BIGINT;
ALTER TABLE members ADD COLUMN referral_qualified_at TIMESTAMPTZ;
CREATE UNIQUE INDEX members_referral_code ON members (program_id, referral_code);
CREATE INDEX members_referred ON members (program_id, referral_qualified_at)
    WHERE referral_qualified_at IS NOT NULL;
