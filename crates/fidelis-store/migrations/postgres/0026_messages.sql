-- Messages to members (see crates/fidelis-store/src/messages.rs): each member's consent per
-- channel with its date and where it was given; the program's own message templates (a
-- program without one uses the shipped template); one row per message an event makes,
-- sent by `fidelis serve` with leases and retries like a webhook delivery. A message
-- keeps no address and no rendered text: both are read when it is sent, so erasure and a
-- withdrawn consent reach messages still waiting. Keep in step with ../sqlite/0026_messages.sql.
CREATE TABLE member_consents (
    member_id   BIGINT NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    program_id  BIGINT NOT NULL REFERENCES programs (id),
    granted     BOOLEAN NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (member_id, channel)
);

CREATE TABLE message_templates (
    program_id  BIGINT NOT NULL REFERENCES programs (id),
    event_type  TEXT NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('email')),
    language    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    text_body   TEXT NOT NULL,
    html_body   TEXT,
    urgent      BOOLEAN NOT NULL,
    active      BOOLEAN NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (program_id, event_type, channel, language)
);

CREATE TABLE messages (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    program_id       BIGINT NOT NULL REFERENCES programs (id),
    event_id         BIGINT NOT NULL REFERENCES events (id),
    member_id        BIGINT NOT NULL,
    channel          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead', 'suppressed')),
    attempts         BIGINT NOT NULL,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    leased_until     TIMESTAMPTZ,
    deferred         BOOLEAN NOT NULL,
    language         TEXT,
    last_error       TEXT,
    sent_at          TIMESTAMPTZ,
    UNIQUE (event_id, channel)
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX messages_program ON messages (program_id, status, id);
CREATE INDEX messages_member ON messages (member_id);
