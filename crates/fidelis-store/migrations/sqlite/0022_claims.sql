-- Missing-points claims (see crates/fidelis-store/src/claims.rs): a member's or an agent's
-- claim for a transaction that earned nothing. Approving posts the transaction as the
-- journal named by its reference (once, by that external id); the claim moves open →
-- approving → approved, or open → rejected with a reason. Keep in step with the other dialect.
CREATE TABLE claims (
    id           INTEGER PRIMARY KEY,
    program_id   INTEGER NOT NULL REFERENCES programs (id),
    claim_id     TEXT NOT NULL,
    member_id    INTEGER NOT NULL REFERENCES members (id),
    reference    TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL,
    amount       INTEGER NOT NULL CHECK (amount > 0),
    partner      TEXT,
    note         TEXT,
    status       TEXT NOT NULL CHECK (status IN ('open', 'approving', 'approved', 'rejected')),
    reason       TEXT,
    filed_by     TEXT NOT NULL,
    filed_at     INTEGER NOT NULL,
    decided_by   TEXT,
    decided_at   INTEGER,
    UNIQUE (program_id, claim_id),
    UNIQUE (program_id, member_id, reference)
);
CREATE INDEX claims_queue ON claims (program_id, status, filed_at);
