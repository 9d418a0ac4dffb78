-- What the dashboard sums, kept incrementally (see src/dashboard.rs). Keep in step with
-- ../postgres/0014_dashboard_rollup.sql.

-- Points issued, redeemed and expired per program, currency and quarter hour of the
-- entries' effective time (seconds since 1970 / 900): every time zone's months are whole
-- quarter hours, so months anywhere are sums of these rows.
CREATE TABLE points_rollup (
    program_id  INTEGER NOT NULL,
    currency    TEXT NOT NULL,
    slot        INTEGER NOT NULL,
    issued      INTEGER NOT NULL,
    redeemed    INTEGER NOT NULL,
    expired     INTEGER NOT NULL,
    PRIMARY KEY (program_id, currency, slot)
);

-- Each member's latest earning or spending of points (for "active in 30 / 90 days").
CREATE TABLE member_activity (
    member_id   INTEGER PRIMARY KEY,
    program_id  INTEGER NOT NULL,
    last_at     INTEGER NOT NULL
);
CREATE INDEX member_activity_last ON member_activity (program_id, last_at);

-- How far the rollup has read: the entries of every journal with an id up to `through`
-- are in it. `seen` is the highest journal id seen when the snapshot horizon `horizon`
-- was taken (PostgreSQL: the next transaction id then); it may be read once every
-- transaction older than the horizon has ended.
CREATE TABLE rollup_marks (
    name     TEXT PRIMARY KEY,
    through  INTEGER NOT NULL,
    seen     INTEGER NOT NULL,
    horizon  INTEGER NOT NULL
);
INSERT INTO rollup_marks (name, through, seen, horizon) VALUES ('dashboard', 0, 0, 0);
