-- Members' standing in the program's tier groups (see fidelis_core::tiers): one row per
-- member, the standing as JSON, and when the next assessment or grace end is due (the
-- scheduled jobs find members by it). Keep in step with ../postgres/0004_member_tiers.sql.
CREATE TABLE member_tiers (
    member_id    INTEGER PRIMARY KEY,
    program_id   INTEGER NOT NULL,
    state        TEXT NOT NULL,
    next_due_at  INTEGER
);
CREATE INDEX member_tiers_due ON member_tiers (program_id, next_due_at);
