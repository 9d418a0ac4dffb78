-- Vouchers (see fidelis_core::vouchers): one row per voucher with its current state, and
-- its value ledger in voucher_entries (append-only; a fixed value's remaining amount is
-- the sum of its entries' amounts). Keep in step with the other dialect.
CREATE TABLE vouchers (
    id              INTEGER PRIMARY KEY,
    program_id      INTEGER NOT NULL REFERENCES programs (id),
    -- Random, unguessable (fidelis_core::vouchers::CodeFormat), stored upper case.
    code            TEXT NOT NULL,
    definition      TEXT NOT NULL,
    member_id       INTEGER REFERENCES members (id),
    status          TEXT NOT NULL CHECK (status IN ('issued', 'reserved', 'redeemed', 'cancelled')),
    kind            TEXT NOT NULL CHECK (kind IN ('fixed', 'percent', 'free_product')),
    -- The definition's value when issued: minor units, a percentage, or a SKU.
    value           TEXT NOT NULL,
    remaining       INTEGER,
    uses_left       INTEGER,
    valid_from      INTEGER NOT NULL,
    valid_until     INTEGER,
    reservation_key TEXT,
    reserved_amount INTEGER,
    -- Who issued it: promotion:CODE, order, agent, bulk.
    source          TEXT NOT NULL,
    -- What makes issuing it once only: a journal and the reward's place in its outcome,
    -- an order, a bulk run's number, an agent's request key.
    source_key      TEXT NOT NULL,
    issued_at       INTEGER NOT NULL,
    UNIQUE (program_id, code),
    UNIQUE (program_id, source_key)
);
CREATE INDEX vouchers_member ON vouchers (member_id) WHERE member_id IS NOT NULL;

CREATE TABLE voucher_entries (
    voucher_id  INTEGER NOT NULL REFERENCES vouchers (id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('issue', 'reserve', 'reinstate', 'redeem', 'cancel')),
    -- The order or redemption key: a retry with the same key is answered, not repeated.
    key         TEXT,
    amount      INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    PRIMARY KEY (voucher_id, seq),
    UNIQUE (voucher_id, kind, key)
);
