-- Member segments and scores (see crates/fidelis-store/src/segments.rs), written by a
-- refresh as of an instant: which members each segment of a program holds, every buying
-- member's churn-model and RFM scores, and one row per refresh (its instant, the program
-- revision, and its report as JSON). A refresh for an instant already refreshed under the
-- same revision changes nothing; a revision saved since recomputes that instant. A refresh
-- replaces a program's rows in one transaction. Keep in step with ../postgres/0023_segments.sql.
CREATE TABLE member_segments (
    program_id  INTEGER NOT NULL REFERENCES programs (id),
    segment     TEXT NOT NULL,
    member_id   INTEGER NOT NULL,
    PRIMARY KEY (program_id, segment, member_id)
);
CREATE INDEX member_segments_member ON member_segments (member_id);

CREATE TABLE member_scores (
    member_id           INTEGER PRIMARY KEY,
    program_id          INTEGER NOT NULL REFERENCES programs (id),
    as_of               INTEGER NOT NULL,
    purchases_90d       INTEGER NOT NULL,
    spend_90d           INTEGER NOT NULL,
    last_purchase_at    INTEGER,
    rfm                 TEXT,
    rfm_segment         TEXT,
    p_alive             REAL,
    expected_purchases  REAL,
    lifetime_value      REAL
);
CREATE INDEX member_scores_program ON member_scores (program_id);

CREATE TABLE segment_refreshes (
    program_id    INTEGER NOT NULL REFERENCES programs (id),
    as_of         INTEGER NOT NULL,
    refreshed_at  INTEGER NOT NULL,
    revision      INTEGER NOT NULL,
    members       INTEGER NOT NULL,
    report        TEXT NOT NULL,
    PRIMARY KEY (program_id, as_of)
);
