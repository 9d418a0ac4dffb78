-- The outbox's delivery (see crates/fidelis-store/src/webhooks.rs). Events (0020) gain the
-- member they concern and whether they were dispatched: a dispatch, in one transaction,
-- makes one delivery per active subscription of the event's program and type and marks the
-- event dispatched, so an event is fanned out once however many servers run. A delivery is
-- leased while it is being sent; a server that dies mid-send leaves a lease that runs out,
-- and the delivery is sent again with the same event id (the receivers' idempotency key).
-- Events from before this migration had no subscriber and count as dispatched.
-- Keep in step with ../postgres/0024_webhooks.sql.
ALTER TABLE events ADD COLUMN member_id INTEGER;
ALTER TABLE events ADD COLUMN dispatched INTEGER NOT NULL DEFAULT 0;
UPDATE events SET dispatched = 1;
CREATE INDEX events_undispatched ON events (id) WHERE dispatched = 0;

CREATE TABLE webhooks (
    id               INTEGER PRIMARY KEY,
    program_id       INTEGER NOT NULL REFERENCES programs (id),
    url              TEXT NOT NULL,
    -- A JSON array of event types; ["*"] for every type.
    events           TEXT NOT NULL,
    description      TEXT NOT NULL,
    secret           TEXT NOT NULL,
    -- The secret before the last rotation, still signing until previous_until.
    previous_secret  TEXT,
    previous_until   INTEGER,
    active           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL
);
CREATE INDEX webhooks_program ON webhooks (program_id);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    webhook_id       INTEGER NOT NULL REFERENCES webhooks (id),
    event_id         INTEGER NOT NULL REFERENCES events (id),
    -- pending, delivered or dead (attempts exhausted; replayable).
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    leased_until     INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    delivered_at     INTEGER,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, status, id);
