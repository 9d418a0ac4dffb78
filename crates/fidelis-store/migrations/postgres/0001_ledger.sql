-- Fidelis schema, PostgreSQL dialect. Keep in step with ../sqlite/0001_ledger.sql:
-- same tables, columns and meaning; the store's behaviour suite runs on both.
--
-- Member-scoped tables are keyed by member first, so a member's ledger is one index
-- range and the schema can be distributed by member.

CREATE TABLE programs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    definition  JSONB NOT NULL,
    revision    INTEGER NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE members (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id   BIGINT NOT NULL REFERENCES programs (id),
    -- Identifiers from outside compare byte by byte: they are opaque, and locale
    -- collation would make every index lookup on them several times slower.
    external_id  TEXT COLLATE "C" NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'closed')),
    profile      JSONB NOT NULL,
    enrolled_at  TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (program_id, external_id)
);

-- One row per member and loyalty currency: the sums of the entries, kept current.
--
-- The tables written for every journal (accounts, journals, entries, buckets) carry no
-- foreign key to members: each check took a row lock on the member (1.2 million lookups,
-- 6 s of a 1,000,000-journal import). Members are never deleted, and the store writes
-- these rows only for members it has just resolved and locked.
CREATE TABLE accounts (
    member_id           BIGINT NOT NULL,
    currency            TEXT COLLATE "C" NOT NULL,
    program_id          BIGINT NOT NULL,
    available           BIGINT NOT NULL,
    pending             BIGINT NOT NULL,
    arrears             BIGINT NOT NULL CHECK (arrears >= 0),
    -- Points held without buckets (a currency that never expires), part of available.
    pool                BIGINT NOT NULL CHECK (pool >= 0),
    last_activity_at    TIMESTAMPTZ,
    -- No expiry or release is due before this instant (the jobs' work list).
    next_transition_at  TIMESTAMPTZ,
    PRIMARY KEY (member_id, currency)
) WITH (fillfactor = 80);
CREATE INDEX accounts_due ON accounts (program_id, next_transition_at)
    WHERE next_transition_at IS NOT NULL;

-- Journal ids come from one sequence (the store reserves them before processing), in
-- blocks of 64: each value v stands for the ids v..v+63, so a batch of a thousand journals
-- takes 32 values, not 2,000. No per-session cache: ids must follow allocation order
-- across connections, because the ledger is listed newest first by journal id.
CREATE SEQUENCE journal_ids INCREMENT BY 64;

CREATE TABLE journals (
    member_id    BIGINT NOT NULL,
    id           BIGINT NOT NULL,
    program_id   BIGINT NOT NULL,
    -- NULL for journals Fidelis writes itself (settlements).
    external_id  TEXT COLLATE "C",
    kind         TEXT NOT NULL,
    type         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('processed', 'cancelled')),
    original_id  BIGINT,
    occurred_at  TIMESTAMPTZ NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    -- The canonical journal document (compared with replays) and the first outcome,
    -- JSON kept as text: written once and read whole, so parsing it into jsonb on
    -- every insert would only cost the server time (cast to jsonb to query it).
    document     TEXT,
    outcome      TEXT,
    -- What later refunds and cancellations read and change (JSON).
    state        TEXT,
    PRIMARY KEY (member_id, id),
    UNIQUE (program_id, external_id)
);

-- The ledger: append-only. Never updated, never deleted. Keyed by journal, so its
-- index grows at the end; a member's entries are found through journals (member_id, id).
CREATE TABLE entries (
    journal_id         BIGINT NOT NULL,
    member_id          BIGINT NOT NULL,
    seq                INTEGER NOT NULL,
    program_id         BIGINT NOT NULL,
    currency           TEXT COLLATE "C" NOT NULL,
    kind               TEXT NOT NULL,
    pool               TEXT NOT NULL CHECK (pool IN ('available', 'pending')),
    bucket_journal_id  BIGINT,
    bucket_seq         INTEGER,
    amount             BIGINT NOT NULL CHECK (amount <> 0),
    effective_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (journal_id, seq)
);

-- Points credited together, with their validity. `remaining` is the sum of the bucket's
-- entries, kept current.
CREATE TABLE buckets (
    member_id          BIGINT NOT NULL,
    journal_id         BIGINT NOT NULL,
    seq                INTEGER NOT NULL,
    program_id         BIGINT NOT NULL,
    currency           TEXT COLLATE "C" NOT NULL,
    credited_at        TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ,
    available_at       TIMESTAMPTZ NOT NULL,
    pending            BOOLEAN NOT NULL,
    credited           BIGINT NOT NULL,
    remaining          BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= credited),
    expired_unclaimed  BIGINT NOT NULL,
    PRIMARY KEY (member_id, journal_id, seq)
) WITH (fillfactor = 80);

-- Imports: where a file's import stands, so a restarted import resumes.
CREATE TABLE import_runs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id   BIGINT NOT NULL REFERENCES programs (id),
    source       TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    partitions   INTEGER NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX import_runs_source ON import_runs (program_id, fingerprint);

-- Progress per partition of an import (journals are spread over partitions by member, each
-- written by its own worker): all of a partition's lines before byte_offset are committed.
CREATE TABLE import_progress (
    run_id       BIGINT NOT NULL REFERENCES import_runs (id),
    partition    INTEGER NOT NULL,
    byte_offset  BIGINT NOT NULL,
    line         BIGINT NOT NULL,
    applied      BIGINT NOT NULL,
    replayed     BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, partition)
);

CREATE TABLE import_rejections (
    run_id       BIGINT NOT NULL REFERENCES import_runs (id),
    line         BIGINT NOT NULL,
    external_id  TEXT,
    code         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    PRIMARY KEY (run_id, line)
);
