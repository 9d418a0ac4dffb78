-- Partners and their ledger (see fidelis_core::partners and crates/fidelis-store/src/partners.rs).
-- A partner's definition is its JSON document; `pack` is the sum of its entries' `pack`,
-- kept in the same transaction as they are written (as accounts are for members).
-- Keep in step with the other dialect.
CREATE TABLE partners (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id  BIGINT NOT NULL REFERENCES programs (id),
    code        TEXT COLLATE "C" NOT NULL,
    document    TEXT NOT NULL,
    pack        BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (program_id, code)
);

-- Append-only. `journal_id` is the member journal that caused the entry (none for a
-- top-up, which is idempotent by its `key`; a top-up's journal_id stays NULL). `points` counts what the entry is about
-- (issued, redeemed, bought; negative for reversals), `pack` its change to the pack,
-- `amount` its money in minor units (positive: owed by the partner), at `rate` per point.
CREATE TABLE partner_entries (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id    BIGINT NOT NULL REFERENCES programs (id),
    partner_id    BIGINT NOT NULL REFERENCES partners (id),
    journal_id    BIGINT,
    -- For a reversal: the journal whose entry it reverses (what is left to reverse is
    -- that entry less the reversals pointing at it).
    original_journal_id BIGINT,
    kind          TEXT NOT NULL CHECK (kind IN ('top_up', 'accrual', 'accrual_reversal', 'redemption', 'redemption_reversal')),
    key           TEXT,
    points        BIGINT NOT NULL,
    pack          BIGINT NOT NULL,
    amount        BIGINT NOT NULL,
    rate          TEXT NOT NULL,
    effective_at  TIMESTAMPTZ NOT NULL,
    recorded_at   TIMESTAMPTZ NOT NULL,
    actor         TEXT NOT NULL,
    UNIQUE (partner_id, key)
);
CREATE INDEX partner_entries_partner ON partner_entries (partner_id, effective_at);
CREATE INDEX partner_entries_journal ON partner_entries (journal_id) WHERE journal_id IS NOT NULL;
CREATE INDEX partner_entries_original ON partner_entries (original_journal_id) WHERE original_journal_id IS NOT NULL;

-- Business events, written in the transaction of the change that caused them (the seed of
-- the outbox: delivery comes with communications). Listed in the console until then.
CREATE TABLE events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id   BIGINT NOT NULL REFERENCES programs (id),
    type         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_program ON events (program_id, id);
