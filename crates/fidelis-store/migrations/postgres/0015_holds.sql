-- Pay with points: until when each open hold may be captured (NULL for every other
-- journal, and for holds captured or released). Keep in step with
-- ../sqlite/0015_holds.sql.
--
-- A nullable column without a default is added without rewriting the table, and the
-- partial index holds only open holds: the jobs find the expired ones, and a member's
-- held points are read without parsing journal states.
ALTER TABLE journals ADD COLUMN hold_until timestamptz;
CREATE INDEX journals_open_holds ON journals (hold_until) WHERE hold_until IS NOT NULL;
