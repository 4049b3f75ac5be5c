-- One row per post of the pin table: the tables are an append-only log, and a re-sent id is the
-- same post. The analytics questions count posts from here.
SELECT DISTINCT ON (ind) * FROM pin ORDER BY ind
