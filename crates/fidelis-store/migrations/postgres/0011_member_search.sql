-- Member search (see fidelis_core::members): one row per term a member is found by (the
-- external id, name words, email, phone digits, lower-cased), so a prefix search is an
-- index range in byte order (collation "C"). Profiles are written only at enrolment, so
-- the terms are too. Keep in step with ../sqlite/0011_member_search.sql.
CREATE TABLE member_terms (
    program_id  BIGINT NOT NULL,
    term        TEXT COLLATE "C" NOT NULL,
    member_id   BIGINT NOT NULL,
    PRIMARY KEY (program_id, term, member_id)
);

-- A search of several words checks the other words on the first word's members.
CREATE INDEX member_terms_member ON member_terms (member_id, term);

-- Listing members newest first or by enrolment date pages through this index.
CREATE INDEX members_enrolled ON members (program_id, enrolled_at, id);

-- Work the store finishes in Rust after a migration (computing terms needs the core):
-- a name here means it is done. A database without members has nothing to fill in.
CREATE TABLE store_upgrades (
    name  TEXT PRIMARY KEY
);
INSERT INTO store_upgrades (name) SELECT 'member_terms' WHERE NOT EXISTS (SELECT 1 FROM members);
