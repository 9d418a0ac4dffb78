-- Benefits are granted once per member and source key, the target of the grant's
-- ON CONFLICT (see ../postgres/0032_benefit_keys.sql). The table's older
-- UNIQUE (program_id, source_key) stays (a source key names one member's journal, so the
-- two say the same): SQLite drops a table constraint only by rebuilding the table.
CREATE UNIQUE INDEX member_benefits_source ON member_benefits (program_id, member_id, source_key);
