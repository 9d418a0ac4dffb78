-- Vouchers (see fidelis_core::vouchers): one row per voucher with its current state, and
-- its value ledger in voucher_entries (append-only; a fixed value's remaining amount is
-- the sum of its entries' amounts). Keep in step with the other dialect.
CREATE TABLE vouchers (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id      BIGINT NOT NULL REFERENCES programs (id),
    -- Random, unguessable (fidelis_core::vouchers::CodeFormat), stored upper case.
    code            TEXT COLLATE "C" NOT NULL,
    definition      TEXT NOT NULL,
    member_id       BIGINT REFERENCES members (id),
    status          TEXT NOT NULL CHECK (status IN ('issued', 'reserved', 'redeemed', 'cancelled')),
    kind            TEXT NOT NULL CHECK (kind IN ('fixed', 'percent', 'free_product')),
    -- The definition's value when issued: minor units, a percentage, or a SKU.
    value           TEXT NOT NULL,
    remaining       BIGINT,
    uses_left       BIGINT,
    valid_from      TIMESTAMPTZ NOT NULL,
    valid_until     TIMESTAMPTZ,
    reservation_key TEXT COLLATE "C",
    reserved_amount BIGINT,
    -- Who issued it: promotion:CODE, order, agent, bulk.
    source          TEXT NOT NULL,
    -- What makes issuing it once only: a journal and the reward's place in its outcome,
    -- an order, a bulk run's number, an agent's request key.
    source_key      TEXT COLLATE "C" NOT NULL,
    issued_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (program_id, code),
    UNIQUE (program_id, source_key)
);
CREATE INDEX vouchers_member ON vouchers (member_id) WHERE member_id IS NOT NULL;

CREATE TABLE voucher_entries (
    voucher_id  BIGINT NOT NULL REFERENCES vouchers (id),
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('issue', 'reserve', 'reinstate', 'redeem', 'cancel')),
    -- The order or redemption key: a retry with the same key is answered, not repeated.
    key         TEXT COLLATE "C",
    amount      BIGINT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    PRIMARY KEY (voucher_id, seq),
    UNIQUE (voucher_id, kind, key)
);
