-- Closed settlement statements (see crates/fidelis-store/src/partners.rs). A statement
-- covers its partner's entries dated before period_to and written up to through_entry_id
-- (read under the partner's lock, so no entry of that partner commits later with a lower
-- id) that no earlier statement covered; once closed it never changes, and entries dated
-- inside it that come later go to the next statement's adjustments. Periods are closed in
-- order, each starting where the last ended. Keep in step with the other dialect.
CREATE TABLE settlements (
    id               INTEGER PRIMARY KEY,
    program_id       INTEGER NOT NULL REFERENCES programs (id),
    partner_id       INTEGER NOT NULL REFERENCES partners (id),
    period_from      INTEGER NOT NULL,
    period_to        INTEGER NOT NULL,
    through_entry_id INTEGER NOT NULL,
    closed_at        INTEGER NOT NULL,
    actor            TEXT NOT NULL,
    -- The statement as closed (JSON), answered as it is from then on.
    statement        TEXT NOT NULL,
    UNIQUE (partner_id, period_from),
    UNIQUE (partner_id, period_to)
);
