-- Orders' ids (the caller's idempotency key) and claims' ids are unique in their program,
-- across members: as journals' and members' (0031, 0033), their uniqueness moves to lookup
-- tables written in the same statement as the row, and the rows are keyed by member.
-- Reads by id still use the tables' own (no longer unique) indexes.
CREATE TABLE order_keys (
    program_id  BIGINT NOT NULL,
    order_id    TEXT COLLATE "C" NOT NULL,
    member_id   BIGINT NOT NULL,
    id          BIGINT NOT NULL,
    PRIMARY KEY (program_id, order_id)
);
INSERT INTO order_keys (program_id, order_id, member_id, id)
    SELECT program_id, order_id, member_id, id FROM orders;
ALTER TABLE orders DROP CONSTRAINT orders_program_id_order_id_key;
CREATE INDEX orders_order_id ON orders (program_id, order_id);
ALTER TABLE orders DROP CONSTRAINT orders_pkey;
ALTER TABLE orders ADD PRIMARY KEY (member_id, id);

CREATE TABLE claim_keys (
    program_id  BIGINT NOT NULL,
    claim_id    TEXT COLLATE "C" NOT NULL,
    member_id   BIGINT NOT NULL,
    id          BIGINT NOT NULL,
    PRIMARY KEY (program_id, claim_id)
);
INSERT INTO claim_keys (program_id, claim_id, member_id, id)
    SELECT program_id, claim_id, member_id, id FROM claims;
ALTER TABLE claims DROP CONSTRAINT claims_program_id_claim_id_key;
CREATE INDEX claims_claim_id ON claims (program_id, claim_id);
ALTER TABLE claims DROP CONSTRAINT claims_pkey;
ALTER TABLE claims ADD PRIMARY KEY (member_id, id);
