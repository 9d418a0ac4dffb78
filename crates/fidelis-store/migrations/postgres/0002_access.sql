-- Access and accountability: API tokens, users, and the audit log.

-- Bearer tokens, stored as the SHA-256 of the token (tokens are random and long, so a
-- fast hash is enough to make a stolen table useless; passwords use argon2 instead).
CREATE TABLE api_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT COLLATE "C" NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'program_manager', 'agent', 'partner', 'member')),
    -- Scope: one program (NULL: all), one partner, one member (by external id).
    program      TEXT COLLATE "C",
    partner      TEXT COLLATE "C",
    member       TEXT COLLATE "C",
    -- Comma-separated permissions the token is limited to (NULL: all of its role's).
    scopes       TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);

CREATE TABLE users (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email          TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'program_manager', 'agent', 'partner', 'member')),
    program        TEXT COLLATE "C",
    partner        TEXT COLLATE "C",
    member         TEXT COLLATE "C",
    created_at     TIMESTAMPTZ NOT NULL
);

-- Every administrative change: who, when, what, before and after. Append-only.
CREATE TABLE audit_log (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL,
    actor    TEXT NOT NULL,
    role     TEXT NOT NULL,
    action   TEXT NOT NULL,
    program  TEXT COLLATE "C",
    subject  TEXT,
    before   TEXT,
    after    TEXT
);
CREATE INDEX audit_log_program ON audit_log (program, id);
