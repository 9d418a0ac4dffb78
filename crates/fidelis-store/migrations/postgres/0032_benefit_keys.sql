-- A benefit's source key names the journal that granted it ("journal:<id>:<promotion>:<n>"),
-- and a journal is one member's: unique per member is the same rule, and one a schema
-- distributed by member can enforce (see 0031_distribution.sql). Keep in step with
-- ../sqlite/0031_benefit_keys.sql.
ALTER TABLE member_benefits DROP CONSTRAINT member_benefits_program_id_source_key_key;
ALTER TABLE member_benefits ADD CONSTRAINT member_benefits_source UNIQUE (program_id, member_id, source_key);
ALTER TABLE member_benefits DROP CONSTRAINT member_benefits_pkey;
ALTER TABLE member_benefits ADD PRIMARY KEY (member_id, id);
