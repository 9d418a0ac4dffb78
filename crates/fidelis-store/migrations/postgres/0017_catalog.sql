-- The reward catalog and its orders (see fidelis_core::catalog). An item's definition is
-- its JSON document; its stock is a column of its own, counted down in the order's
-- transaction (NULL: unlimited). Keep in step with the other dialect.
CREATE TABLE catalog_items (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id  BIGINT NOT NULL REFERENCES programs (id),
    code        TEXT COLLATE "C" NOT NULL,
    document    TEXT NOT NULL,
    stock       BIGINT CHECK (stock >= 0),
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (program_id, code)
);

-- An order spends its points through the redemption journal `order:ORDER_ID` and gives
-- them back through that journal's cancellation: the points are in the ledger, never here.
CREATE TABLE orders (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id   BIGINT NOT NULL REFERENCES programs (id),
    order_id     TEXT COLLATE "C" NOT NULL,
    member_id    BIGINT NOT NULL REFERENCES members (id),
    item         TEXT NOT NULL,
    currency     TEXT NOT NULL,
    points       BIGINT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('placing', 'placed', 'fulfilled', 'cancelled', 'rejected')),
    partner      TEXT,
    voucher_code TEXT,
    -- Why the ledger refused it, for a rejected order.
    reason       TEXT,
    placed_at    TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (program_id, order_id)
);
CREATE INDEX orders_member ON orders (member_id, id);
CREATE INDEX orders_program ON orders (program_id, id);
