-- Members' external ids and referral codes are unique in their program, across members:
-- as journals' external ids (0031_distribution.sql), their uniqueness moves to lookup
-- tables keyed by them, written in the same statement as the member. Reads by them still
-- use the members' own (no longer unique) indexes.
CREATE TABLE member_keys (
    program_id   BIGINT NOT NULL,
    external_id  TEXT COLLATE "C" NOT NULL,
    member_id    BIGINT NOT NULL,
    PRIMARY KEY (program_id, external_id)
);
INSERT INTO member_keys (program_id, external_id, member_id)
    SELECT program_id, external_id, id FROM members;

CREATE TABLE referral_codes (
    program_id  BIGINT NOT NULL,
    code        TEXT NOT NULL,
    member_id   BIGINT NOT NULL,
    PRIMARY KEY (program_id, code)
);
INSERT INTO referral_codes (program_id, code, member_id)
    SELECT program_id, referral_code, id FROM members WHERE referral_code IS NOT NULL;

ALTER TABLE members DROP CONSTRAINT members_program_id_external_id_key;
CREATE INDEX members_external ON members (program_id, external_id);
DROP INDEX members_referral_code;
CREATE INDEX members_referral_code ON members (program_id, referral_code);
