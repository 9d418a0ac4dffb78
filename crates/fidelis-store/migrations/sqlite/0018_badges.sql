-- Badges and granted benefits, awarded by promotions inside the journal's batch (see
-- crates/fidelis-store/src/badges.rs). Keep in step with the other dialect.
CREATE TABLE member_badges (
    program_id  INTEGER NOT NULL REFERENCES programs (id),
    member_id   INTEGER NOT NULL REFERENCES members (id),
    badge       TEXT NOT NULL,
    -- How many times it was awarded (1 for a badge that is not repeatable).
    times       INTEGER NOT NULL,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    -- The promotion that first awarded it.
    source      TEXT NOT NULL,
    PRIMARY KEY (member_id, badge)
);

CREATE TABLE member_benefits (
    id          INTEGER PRIMARY KEY,
    program_id  INTEGER NOT NULL REFERENCES programs (id),
    member_id   INTEGER NOT NULL REFERENCES members (id),
    code        TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    source      TEXT NOT NULL,
    -- The journal and the reward's place in its outcome: granted once.
    source_key  TEXT NOT NULL,
    UNIQUE (program_id, source_key)
);
CREATE INDEX member_benefits_member ON member_benefits (member_id, ends_at);
