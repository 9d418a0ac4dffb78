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
    external_id  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'closed')),
    profile      JSONB NOT NULL,
    enrolled_at  TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (program_id, external_id)
);

-- One row per member and loyalty currency: the sums of the entries, kept current.
CREATE TABLE accounts (
    member_id           BIGINT NOT NULL REFERENCES members (id),
    currency            TEXT NOT NULL,
    program_id          BIGINT NOT NULL,
    available           BIGINT NOT NULL,
    pending             BIGINT NOT NULL,
    arrears             BIGINT NOT NULL CHECK (arrears >= 0),
    last_activity_at    TIMESTAMPTZ,
    -- No expiry or release is due before this instant (the jobs' work list).
    next_transition_at  TIMESTAMPTZ,
    PRIMARY KEY (member_id, currency)
) WITH (fillfactor = 80);
CREATE INDEX accounts_due ON accounts (program_id, next_transition_at)
    WHERE next_transition_at IS NOT NULL;

-- Journal ids come from one sequence (the store reserves them before processing). No
-- per-session cache: ids must follow allocation order across connections, because the
-- ledger is listed newest first by journal id.
CREATE SEQUENCE journal_ids;

CREATE TABLE journals (
    member_id    BIGINT NOT NULL REFERENCES members (id),
    id           BIGINT NOT NULL,
    program_id   BIGINT NOT NULL,
    -- NULL for journals Fidelis writes itself (settlements).
    external_id  TEXT,
    kind         TEXT NOT NULL,
    type         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('processed', 'cancelled')),
    original_id  BIGINT,
    occurred_at  TIMESTAMPTZ NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    -- The canonical journal document (compared with replays) and the first outcome.
    document     JSONB,
    outcome      JSONB,
    -- What later refunds and cancellations read and change.
    state        JSONB,
    PRIMARY KEY (member_id, id),
    UNIQUE (program_id, external_id)
);

-- The ledger: append-only. Never updated, never deleted.
CREATE TABLE entries (
    member_id          BIGINT NOT NULL,
    journal_id         BIGINT NOT NULL,
    seq                INTEGER NOT NULL,
    program_id         BIGINT NOT NULL,
    currency           TEXT NOT NULL,
    kind               TEXT NOT NULL,
    pool               TEXT NOT NULL CHECK (pool IN ('available', 'pending')),
    bucket_journal_id  BIGINT,
    bucket_seq         INTEGER,
    amount             BIGINT NOT NULL CHECK (amount <> 0),
    effective_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (member_id, journal_id, seq)
);

-- Points credited together, with their validity. `remaining` is the sum of the bucket's
-- entries, kept current.
CREATE TABLE buckets (
    member_id          BIGINT NOT NULL,
    journal_id         BIGINT NOT NULL,
    seq                INTEGER NOT NULL,
    program_id         BIGINT NOT NULL,
    currency           TEXT NOT NULL,
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
    byte_offset  BIGINT NOT NULL,
    line         BIGINT NOT NULL,
    applied      BIGINT NOT NULL,
    replayed     BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX import_runs_source ON import_runs (program_id, fingerprint);

CREATE TABLE import_rejections (
    run_id       BIGINT NOT NULL REFERENCES import_runs (id),
    line         BIGINT NOT NULL,
    external_id  TEXT,
    code         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    PRIMARY KEY (run_id, line)
);
