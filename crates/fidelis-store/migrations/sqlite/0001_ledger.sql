-- Fidelis schema, SQLite dialect. Keep in step with ../postgres/0001_ledger.sql:
-- same tables, columns and meaning; the store's behaviour suite runs on both.
--
-- Instants are INTEGER microseconds since the Unix epoch (UTC); JSON is TEXT.
-- Member-scoped tables with small rows are WITHOUT ROWID, clustered by member.

CREATE TABLE programs (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE members (
    id           INTEGER PRIMARY KEY,
    program_id   INTEGER NOT NULL REFERENCES programs (id),
    external_id  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'closed')),
    profile      TEXT NOT NULL,
    enrolled_at  INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (program_id, external_id)
);

-- The tables written for every journal carry no foreign key to members (see the
-- PostgreSQL migration for why): members are never deleted.
CREATE TABLE accounts (
    member_id           INTEGER NOT NULL,
    currency            TEXT NOT NULL,
    program_id          INTEGER NOT NULL,
    available           INTEGER NOT NULL,
    pending             INTEGER NOT NULL,
    arrears             INTEGER NOT NULL CHECK (arrears >= 0),
    -- Points held without buckets (a currency that never expires), part of available.
    pool                INTEGER NOT NULL CHECK (pool >= 0),
    last_activity_at    INTEGER,
    next_transition_at  INTEGER,
    PRIMARY KEY (member_id, currency)
) WITHOUT ROWID;
CREATE INDEX accounts_due ON accounts (program_id, next_transition_at)
    WHERE next_transition_at IS NOT NULL;

-- Journal ids: SQLite has one writer at a time, so a counter row serves as the sequence.
CREATE TABLE sequences (
    name  TEXT PRIMARY KEY,
    next  INTEGER NOT NULL
);
INSERT INTO sequences (name, next) VALUES ('journal_ids', 1);

-- An ordinary rowid table (journal ids are unique on their own): rows of a kilobyte
-- would overflow into pages of their own in a WITHOUT ROWID table.
CREATE TABLE journals (
    id           INTEGER PRIMARY KEY,
    member_id    INTEGER NOT NULL,
    program_id   INTEGER NOT NULL,
    external_id  TEXT,
    kind         TEXT NOT NULL,
    type         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('processed', 'cancelled')),
    original_id  INTEGER,
    occurred_at  INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL,
    document     TEXT,
    outcome      TEXT,
    state        TEXT,
    UNIQUE (program_id, external_id)
);
CREATE INDEX journals_member ON journals (member_id, id);

-- The ledger: append-only, clustered by journal, so writing it is sequential. A
-- member's entries are found through journals_member.
CREATE TABLE entries (
    journal_id         INTEGER NOT NULL,
    member_id          INTEGER NOT NULL,
    seq                INTEGER NOT NULL,
    program_id         INTEGER NOT NULL,
    currency           TEXT NOT NULL,
    kind               TEXT NOT NULL,
    pool               TEXT NOT NULL CHECK (pool IN ('available', 'pending')),
    bucket_journal_id  INTEGER,
    bucket_seq         INTEGER,
    amount             INTEGER NOT NULL CHECK (amount <> 0),
    effective_at       INTEGER NOT NULL,
    PRIMARY KEY (journal_id, seq)
) WITHOUT ROWID;

-- Rows in insertion order (a rowid table), found by member through the primary key's
-- index: a bucket insert then changes one page of small index entries instead of a page
-- of whole rows somewhere in the member-ordered table (measured: 12,000 pages changed
-- per batch of 20,000 journals before, about 5,000 after).
CREATE TABLE buckets (
    member_id          INTEGER NOT NULL,
    journal_id         INTEGER NOT NULL,
    seq                INTEGER NOT NULL,
    program_id         INTEGER NOT NULL,
    currency           TEXT NOT NULL,
    credited_at        INTEGER NOT NULL,
    expires_at         INTEGER,
    available_at       INTEGER NOT NULL,
    pending            INTEGER NOT NULL,
    credited           INTEGER NOT NULL,
    remaining          INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= credited),
    expired_unclaimed  INTEGER NOT NULL,
    PRIMARY KEY (member_id, journal_id, seq)
);

CREATE TABLE import_runs (
    id           INTEGER PRIMARY KEY,
    program_id   INTEGER NOT NULL REFERENCES programs (id),
    source       TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    partitions   INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX import_runs_source ON import_runs (program_id, fingerprint);

-- Progress per partition of an import (journals are spread over partitions by member, each
-- written by its own worker): all of a partition's lines before byte_offset are committed.
CREATE TABLE import_progress (
    run_id       INTEGER NOT NULL REFERENCES import_runs (id),
    partition    INTEGER NOT NULL,
    byte_offset  INTEGER NOT NULL,
    line         INTEGER NOT NULL,
    applied      INTEGER NOT NULL,
    replayed     INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, partition)
) WITHOUT ROWID;

CREATE TABLE import_rejections (
    run_id       INTEGER NOT NULL REFERENCES import_runs (id),
    line         INTEGER NOT NULL,
    external_id  TEXT,
    code         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    PRIMARY KEY (run_id, line)
) WITHOUT ROWID;
