-- Sign-in for the pages (console and portal). Keep in step with ../sqlite/0013_sign_in.sql.

-- A signed-in browser: the cookie holds a random id, this table its SHA-256 (a stolen
-- database does not hand out live sessions). Staff sessions name a user (their rights are
-- read from the user on every request, so a changed role applies at once); member sessions
-- name a program and a member's external id.
CREATE TABLE web_sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     BIGINT REFERENCES users (id),
    program     TEXT,
    member      TEXT,
    -- The session's anti-forgery token, embedded in every form of its pages.
    csrf        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    CHECK ((user_id IS NULL) <> (member IS NULL))
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- A member's portal password (argon2), set through a one-time link.
CREATE TABLE member_credentials (
    member_id      BIGINT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- One-time links that let a member set a portal password (stored as SHA-256).
CREATE TABLE signin_links (
    token_hash  TEXT PRIMARY KEY,
    member_id   BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);

-- A member's audit trail (the console's member view) reads by subject within a program.
CREATE INDEX audit_log_subject ON audit_log (program, subject, id);
