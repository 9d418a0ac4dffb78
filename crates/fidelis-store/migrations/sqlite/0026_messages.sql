-- Messages to members (see crates/fidelis-store/src/messages.rs): each member's consent per
-- channel with its date and where it was given; the program's own message templates (a
-- program without one uses the shipped template); one row per message an event makes,
-- sent by `fidelis serve` with leases and retries like a webhook delivery. A message
-- keeps no address and no rendered text: both are read when it is sent, so erasure and a
-- withdrawn consent reach messages still waiting. Keep in step with ../postgres/0026_messages.sql.
CREATE TABLE member_consents (
    member_id   INTEGER NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    program_id  INTEGER NOT NULL REFERENCES programs (id),
    granted     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (member_id, channel)
);

CREATE TABLE message_templates (
    program_id  INTEGER NOT NULL REFERENCES programs (id),
    event_type  TEXT NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('email')),
    language    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    text_body   TEXT NOT NULL,
    html_body   TEXT,
    urgent      INTEGER NOT NULL,
    active      INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (program_id, event_type, channel, language)
);

CREATE TABLE messages (
    id               INTEGER PRIMARY KEY,
    program_id       INTEGER NOT NULL REFERENCES programs (id),
    event_id         INTEGER NOT NULL REFERENCES events (id),
    member_id        INTEGER NOT NULL,
    channel          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead', 'suppressed')),
    attempts         INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    leased_until     INTEGER,
    deferred         INTEGER NOT NULL,
    language         TEXT,
    last_error       TEXT,
    sent_at          INTEGER,
    UNIQUE (event_id, channel)
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX messages_program ON messages (program_id, status, id);
CREATE INDEX messages_member ON messages (member_id);
