-- Fraud rules (see crates/fidelis-store/src/fraud.rs). Keep in step with
-- ../sqlite/0028_fraud.sql.
--
-- A journal a rule held: its document waits here, unprocessed (no entry, no points), until
-- an agent releases it (it is then processed as of its activity and lands in journals) or
-- rejects it. Its external id is taken: a replay answers the hold.
CREATE TABLE held_journals (
    id           BIGSERIAL PRIMARY KEY,
    program_id   BIGINT NOT NULL REFERENCES programs (id),
    member_id    BIGINT NOT NULL,
    external_id  TEXT COLLATE "C" NOT NULL,
    type         TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    document     TEXT NOT NULL,
    rule         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('held', 'released', 'rejected')),
    held_at      TIMESTAMPTZ NOT NULL,
    decided_at   TIMESTAMPTZ,
    decided_by   TEXT,
    note         TEXT,
    UNIQUE (program_id, external_id)
);
CREATE INDEX held_journals_queue ON held_journals (program_id, status, id);
CREATE INDEX held_journals_member ON held_journals (member_id);

-- What the rules remember of a member: the last accruals and redemptions screened
-- ("a<unix seconds>:<minor units>" or "r<unix seconds>", oldest first, space-separated).
CREATE TABLE member_risk (
    member_id   BIGINT PRIMARY KEY,
    program_id  BIGINT NOT NULL,
    recent      TEXT NOT NULL
);

-- Receipts sent with screened accruals, per member: the same receipt for another member
-- is held.
CREATE TABLE journal_receipts (
    program_id  BIGINT NOT NULL,
    receipt     TEXT COLLATE "C" NOT NULL,
    member_id   BIGINT NOT NULL,
    PRIMARY KEY (program_id, receipt, member_id)
);

-- A flagged member: an agent's mark with its reason, shown in the console.
ALTER TABLE members ADD COLUMN flagged TEXT;

-- When the member's profile last changed (a redemption soon after is held by the rule
-- redemption_after_change).
ALTER TABLE members ADD COLUMN profile_changed_at TIMESTAMPTZ;
