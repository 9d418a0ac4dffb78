-- A group's (household's) member record points at itself: `group_id = id`. Journals read
-- it with the member, so a journal naming a group by a member route is refused without
-- another query. Keep in step with the other dialect.
UPDATE members SET group_id = id WHERE id IN (SELECT group_id FROM member_groups);
