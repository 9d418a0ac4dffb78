-- A held journal's external id is taken in its program, across members: as journals'
-- (0031_distribution.sql), its uniqueness moves to a lookup table written in the same
-- statement as the held journal, and held journals are keyed by member. Reads by external
-- id still use the table's own (no longer unique) index.
CREATE TABLE held_keys (
    program_id   BIGINT NOT NULL,
    external_id  TEXT COLLATE "C" NOT NULL,
    member_id    BIGINT NOT NULL,
    id           BIGINT NOT NULL,
    PRIMARY KEY (program_id, external_id)
);
INSERT INTO held_keys (program_id, external_id, member_id, id)
    SELECT program_id, external_id, member_id, id FROM held_journals;
ALTER TABLE held_journals DROP CONSTRAINT held_journals_program_id_external_id_key;
CREATE INDEX held_journals_external ON held_journals (program_id, external_id);
ALTER TABLE held_journals DROP CONSTRAINT held_journals_pkey;
ALTER TABLE held_journals ADD PRIMARY KEY (member_id, id);
-- The primary key leads with the member now.
DROP INDEX held_journals_member;
