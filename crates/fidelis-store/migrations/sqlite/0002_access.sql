-- Access and accountability: API tokens, users, and the audit log. Keep in step with
-- ../postgres/0002_access.sql.

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'program_manager', 'agent', 'partner', 'member')),
    program      TEXT,
    partner      TEXT,
    member       TEXT,
    scopes       TEXT,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'program_manager', 'agent', 'partner', 'member')),
    program        TEXT,
    partner        TEXT,
    member         TEXT,
    created_at     INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    role     TEXT NOT NULL,
    action   TEXT NOT NULL,
    program  TEXT,
    subject  TEXT,
    before   TEXT,
    after    TEXT
);
CREATE INDEX audit_log_program ON audit_log (program, id);
