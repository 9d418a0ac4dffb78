-- Ready to be distributed by member (PRODUCT.md §17; ARCHITECTURE.md, "Distributing the
-- schema"). A distributed PostgreSQL (Citus) requires every primary key and unique
-- constraint of a distributed table to include its distribution column; the test
-- `crates/fidelis-store/tests/distribution.rs` checks the rule for every table.
--
-- PostgreSQL only: SQLite is one file on one machine and keeps its journals' unique index.

-- A journal's external id is unique in its program across all members, so its uniqueness
-- cannot live in a table distributed by member. It moves to journal_keys, keyed by the
-- external id (distributed by it), written in the same statement as the journal; reads
-- by external id go through it to the journal's (member_id, id). Journals written by
-- Fidelis itself (no external id) have no key.
CREATE TABLE journal_keys (
    program_id   BIGINT NOT NULL,
    external_id  TEXT COLLATE "C" NOT NULL,
    member_id    BIGINT NOT NULL,
    journal_id   BIGINT NOT NULL,
    PRIMARY KEY (program_id, external_id)
);
INSERT INTO journal_keys (program_id, external_id, member_id, journal_id)
    SELECT program_id, external_id, member_id, id FROM journals WHERE external_id IS NOT NULL;
ALTER TABLE journals DROP CONSTRAINT journals_program_id_external_id_key;

-- The ledger keeps its journal-first key (written at its end; the dashboard's rollup reads
-- it by ranges of journal ids) with the member in it.
ALTER TABLE entries DROP CONSTRAINT entries_pkey;
ALTER TABLE entries ADD PRIMARY KEY (journal_id, member_id, seq);
