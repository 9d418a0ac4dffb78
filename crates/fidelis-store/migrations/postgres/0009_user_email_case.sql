-- Email addresses are one user whatever their case: stored lower-cased from now on, and
-- earlier ones lower-cased where that meets no other user's address (a pair differing
-- only in case stays as it was, for an operator to resolve). Keep in step with the other
-- dialect.
UPDATE users SET email = lower(email)
WHERE email <> lower(email)
  AND NOT EXISTS (SELECT 1 FROM users other WHERE other.email = lower(users.email));
