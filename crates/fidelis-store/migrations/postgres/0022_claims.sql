-- Missing-points claims (see crates/fidelis-store/src/claims.rs): a member's or an agent's
-- claim for a transaction that earned nothing. Approving posts the transaction as the
-- journal named by its reference (once, by that external id); the claim moves open →
-- approving → approved, or open → rejected with a reason. Keep in step with the other dialect.
CREATE TABLE claims (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id   BIGINT NOT NULL REFERENCES programs (id),
    claim_id     TEXT COLLATE "C" NOT NULL,
    member_id    BIGINT NOT NULL REFERENCES members (id),
    reference    TEXT COLLATE "C" NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    amount       BIGINT NOT NULL CHECK (amount > 0),
    partner      TEXT,
    note         TEXT,
    status       TEXT NOT NULL CHECK (status IN ('open', 'approving', 'approved', 'rejected')),
    reason       TEXT,
    filed_by     TEXT NOT NULL,
    filed_at     TIMESTAMPTZ NOT NULL,
    decided_by   TEXT,
    decided_at   TIMESTAMPTZ,
    UNIQUE (program_id, claim_id),
    UNIQUE (program_id, member_id, reference)
);
CREATE INDEX claims_queue ON claims (program_id, status, filed_at);
