-- Points about to expire (see crates/fidelis-store/src/expiry.rs): which of a member's
-- expiries the jobs announced with a `points.expiring` event, so each is announced once
-- however often the jobs run. Keep in step with ../postgres/0027_expiry_notices.sql.
CREATE TABLE expiry_notices (
    member_id     INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    program_id    INTEGER NOT NULL REFERENCES programs (id),
    announced_at  INTEGER NOT NULL,
    PRIMARY KEY (member_id, currency, expires_at)
);
