-- Vouchers are distributed by their own id, not by member: a voucher may belong to no one
-- (a bulk run's codes handed out at a till), and a member's vouchers are few. Their value
-- ledger goes with them (voucher_entries by voucher_id, its keys already lead with it).
-- What is unique across vouchers, a code and the source key that makes issuing once only,
-- moves to lookup tables distributed by that key and written in the same statement as the
-- voucher, as journals' external ids did (0031_distribution.sql). Reads by code or source
-- key still use the table's own (no longer unique) indexes.
CREATE TABLE voucher_codes (
    program_id   BIGINT NOT NULL,
    code         TEXT COLLATE "C" NOT NULL,
    voucher_id   BIGINT NOT NULL,
    PRIMARY KEY (program_id, code)
);
CREATE TABLE voucher_sources (
    program_id   BIGINT NOT NULL,
    source_key   TEXT COLLATE "C" NOT NULL,
    voucher_id   BIGINT NOT NULL,
    PRIMARY KEY (program_id, source_key)
);
INSERT INTO voucher_codes (program_id, code, voucher_id)
    SELECT program_id, code, id FROM vouchers;
INSERT INTO voucher_sources (program_id, source_key, voucher_id)
    SELECT program_id, source_key, id FROM vouchers;
ALTER TABLE vouchers DROP CONSTRAINT vouchers_program_id_code_key;
ALTER TABLE vouchers DROP CONSTRAINT vouchers_program_id_source_key_key;
CREATE INDEX vouchers_code ON vouchers (program_id, code);
CREATE INDEX vouchers_source ON vouchers (program_id, source_key);
-- The member a voucher belongs to is a plain column: a foreign key between distributed
-- tables must join their distribution columns. The store writes it only with a member it
-- read in the same transaction (issue, bulk issue, a promotion's reward, a merge), and
-- members are never deleted (an erasure pseudonymises them).
ALTER TABLE vouchers DROP CONSTRAINT vouchers_member_id_fkey;
