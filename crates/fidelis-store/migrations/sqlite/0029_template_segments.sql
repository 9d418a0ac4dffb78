-- A message template may be for some segments only (see crates/fidelis-store/src/messages.rs):
-- a JSON array of segment codes, NULL for every member. Keep in step with
-- ../postgres/0029_template_segments.sql.
ALTER TABLE message_templates ADD COLUMN segments TEXT;
