-- A member's open holds, read with every balance (`held`): a partial index holds only them.
CREATE INDEX journals_member_open_holds ON journals (member_id) WHERE hold_until IS NOT NULL;
