-- The audit log is filtered by program, actor or action, newest first: an index for each.
-- Keep in step with the other dialect.
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
