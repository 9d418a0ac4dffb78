-- Groups (households): a group is a member record of its own (its ledger holds the pooled
-- points); members belong to at most one group and give it a share of what they earn.
-- `redeem` says who may spend the group's points. Keep in step with the other dialect.
CREATE TABLE member_groups (
    group_id       INTEGER PRIMARY KEY,
    program_id     INTEGER NOT NULL,
    share_percent  INTEGER NOT NULL CHECK (share_percent BETWEEN 1 AND 100),
    redeem         TEXT NOT NULL CHECK (redeem IN ('owner', 'any_member')),
    owner_id       INTEGER NOT NULL
);
ALTER TABLE members ADD COLUMN group_id INTEGER;
