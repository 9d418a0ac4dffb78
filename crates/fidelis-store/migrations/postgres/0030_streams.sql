-- The outbox published to a message broker (NATS JetStream; see
-- crates/fidelis-store/src/streams.rs). An event is streamed once a broker acknowledged it;
-- the dispatch marks events streamed at once while no stream is registered, so the partial
-- index holds only what a stream still has to publish. Events from before this migration
-- had no stream and count as streamed.
-- A lease names the one server doing a singular task (publishing a stream) until a time:
-- another takes it over once that time has passed.
-- Keep in step with ../sqlite/0030_streams.sql.
ALTER TABLE events ADD COLUMN streamed BOOLEAN NOT NULL DEFAULT false;
UPDATE events SET streamed = true;
CREATE INDEX events_unstreamed ON events (id) WHERE streamed = false;

CREATE TABLE event_streams (
    name        TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    until   TIMESTAMPTZ NOT NULL
);
