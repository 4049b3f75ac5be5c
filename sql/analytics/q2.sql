-- Q2: the most popular category each year, for posts from 2018 to 2022 (the year of the geo
-- timestamp; ties kept). Posts are counted once per id.
WITH counts AS (
  SELECT CAST(date_part('year', g."timestamp") AS BIGINT) AS post_year, p.category, COUNT(*) AS category_count
  FROM pin_posts p JOIN geo_posts g ON p.ind = g.ind
  WHERE date_part('year', g."timestamp") BETWEEN 2018 AND 2022 AND p.category IS NOT NULL
  GROUP BY 1, 2
),
ranked AS (
  SELECT post_year, category, category_count,
         RANK() OVER (PARTITION BY post_year ORDER BY category_count DESC) AS place
  FROM counts
)
SELECT post_year, category, category_count
FROM ranked
WHERE place = 1
ORDER BY post_year, category
