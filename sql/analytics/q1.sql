-- Q1: the most popular category in each country (ties kept).
-- Posts are counted once per id: the tables are an append-only log, and a re-sent id is the same post.
WITH counts AS (
  SELECT g.country, p.category, COUNT(*) AS category_count
  FROM pin_posts p JOIN geo_posts g ON p.ind = g.ind
  WHERE g.country IS NOT NULL AND p.category IS NOT NULL
  GROUP BY g.country, p.category
),
ranked AS (
  SELECT country, category, category_count,
         RANK() OVER (PARTITION BY country ORDER BY category_count DESC) AS place
  FROM counts
)
SELECT country, category, category_count
FROM ranked
WHERE place = 1
ORDER BY country, category
