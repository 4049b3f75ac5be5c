-- Cleans the user stream (REFERENCE.md section 2).
--
-- * user_name = first_name || ' ' || last_name (NULL when either is missing); the name columns dropped.
-- * date_joined parsed into a timestamp (space or `T` form; unparseable becomes NULL).
SELECT
  ind,
  first_name || ' ' || last_name AS user_name,
  age,
  TRY_CAST(date_joined AS TIMESTAMP) AS date_joined
FROM raw
