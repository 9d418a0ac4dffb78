-- Promotion limit counters: how often, and for how many points, a promotion awarded to
-- one member (member_id) or to everyone (member_id 0), over its life (period '') or in a
-- calendar period ('d:2026-06-13', 'w:2026-W24', 'm:2026-06', 'y:2026'). Rows are only
-- ever added to; a member's rows are written under the member's lock, everyone's rows
-- are locked (FOR UPDATE on PostgreSQL) before they are read.
CREATE TABLE promotion_usage (
    program_id  BIGINT NOT NULL,
    promotion   TEXT NOT NULL,
    member_id   BIGINT NOT NULL,
    period      TEXT NOT NULL,
    times       BIGINT NOT NULL,
    points      BIGINT NOT NULL,
    PRIMARY KEY (program_id, promotion, member_id, period)
) WITHOUT ROWID;
