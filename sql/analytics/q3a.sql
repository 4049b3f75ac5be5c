-- Q3a: the user with the most followers in each country (ties kept; unknown counts left out).
WITH posts AS (
  SELECT g.country, p.poster_name, p.follower_count
  FROM pin_posts p JOIN geo_posts g ON p.ind = g.ind
  WHERE p.follower_count IS NOT NULL AND g.country IS NOT NULL
),
ranked AS (
  SELECT country, poster_name, follower_count,
         RANK() OVER (PARTITION BY country ORDER BY follower_count DESC) AS place
  FROM posts
)
SELECT DISTINCT country, poster_name, follower_count
FROM ranked
WHERE place = 1
ORDER BY country, poster_name
