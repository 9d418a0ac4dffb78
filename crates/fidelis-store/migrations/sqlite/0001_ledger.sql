-- Fidelis schema, SQLite dialect. Keep in step with ../postgres/0001_ledger.sql:
-- same tables, columns and meaning; the store's behaviour suite runs on both.
--
-- Instants are INTEGER microseconds since the Unix epoch (UTC); JSON is TEXT.
-- Member-scoped tables are WITHOUT ROWID, clustered by member.

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

CREATE TABLE accounts (
    member_id           INTEGER NOT NULL REFERENCES members (id),
    currency            TEXT NOT NULL,
    program_id          INTEGER NOT NULL,
    available           INTEGER NOT NULL,
    pending             INTEGER NOT NULL,
    arrears             INTEGER NOT NULL CHECK (arrears >= 0),
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

CREATE TABLE journals (
    member_id    INTEGER NOT NULL REFERENCES members (id),
    id           INTEGER NOT NULL,
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
    PRIMARY KEY (member_id, id),
    UNIQUE (program_id, external_id)
) WITHOUT ROWID;

CREATE TABLE entries (
    member_id          INTEGER NOT NULL,
    journal_id         INTEGER NOT NULL,
    seq                INTEGER NOT NULL,
    program_id         INTEGER NOT NULL,
    currency           TEXT NOT NULL,
    kind               TEXT NOT NULL,
    pool               TEXT NOT NULL CHECK (pool IN ('available', 'pending')),
    bucket_journal_id  INTEGER,
    bucket_seq         INTEGER,
    amount             INTEGER NOT NULL CHECK (amount <> 0),
    effective_at       INTEGER NOT NULL,
    PRIMARY KEY (member_id, journal_id, seq)
) WITHOUT ROWID;

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
) WITHOUT ROWID;

CREATE TABLE import_runs (
    id           INTEGER PRIMARY KEY,
    program_id   INTEGER NOT NULL REFERENCES programs (id),
    source       TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    byte_offset  INTEGER NOT NULL,
    line         INTEGER NOT NULL,
    applied      INTEGER NOT NULL,
    replayed     INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE INDEX import_runs_source ON import_runs (program_id, fingerprint);

CREATE TABLE import_rejections (
    run_id       INTEGER NOT NULL REFERENCES import_runs (id),
    line         INTEGER NOT NULL,
    external_id  TEXT,
    code         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    PRIMARY KEY (run_id, line)
) WITHOUT ROWID;
