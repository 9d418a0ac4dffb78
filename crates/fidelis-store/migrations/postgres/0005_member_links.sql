-- Links between members: a merged member points at its survivor (journals for it go
-- there); a member's referral code, and who referred them. Keep in step with
-- ../sqlite/0005_member_links.sql.
ALTER TABLE members ADD COLUMN merged_into BIGINT;
ALTER TABLE members ADD COLUMN referral_code TEXT;
ALTER TABLE members ADD COLUMN referred_by BIGINT;
ALTER TABLE members ADD COLUMN referral_qualified_at TIMESTAMPTZ;
ALTER TABLE members ADD COLUMN referral_rewarded_at TIMESTAMPTZ;
CREATE UNIQUE INDEX members_referral_code ON members (program_id, referral_code);
-- Referees who qualified and whose rewards are not posted yet (a handful at any time).
CREATE INDEX members_referral_due ON members (program_id, id)
    WHERE referral_qualified_at IS NOT NULL AND referral_rewarded_at IS NULL;
