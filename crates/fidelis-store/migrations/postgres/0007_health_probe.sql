-- One row that readiness checks rewrite when writes have been failing (a full disk): a
-- write that commits is the only proof that writes work again. Keep in step with the
-- other dialect.
CREATE TABLE health_probe (
    id          INTEGER PRIMARY KEY,
    checked_at  TIMESTAMPTZ NOT NULL
);
