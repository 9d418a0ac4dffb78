-- Scheduled rewards given (see fidelis_core::promotions::scheduled): one row per
-- promotion, member and period, so a job run skips members already rewarded. The reward
-- itself is an adjustment journal whose external id names the same three, which is what
-- makes it once only; this table only saves work. Keep in step with the other dialect.
CREATE TABLE scheduled_rewards (
    program_id  INTEGER NOT NULL,
    promotion   TEXT NOT NULL,
    member_id   INTEGER NOT NULL,
    period      TEXT NOT NULL,
    awarded_at  INTEGER NOT NULL,
    PRIMARY KEY (program_id, promotion, member_id, period)
);

-- Birthday rewards find the members born on a month and day (MM-DD of the profile's
-- birthday, YYYY-MM-DD).
CREATE INDEX members_birthday ON members (program_id, (substr(json_extract(profile, '$.birthday'), 6, 5)));
