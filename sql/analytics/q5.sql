-- Q5: the median follower count per age group (exact: an even-sized group averages its two
-- middle values; unknown counts left out).
WITH pins AS (SELECT DISTINCT ON (ind) ind, follower_count FROM pin ORDER BY ind),
users AS (SELECT DISTINCT ON (ind) ind, age FROM "user" ORDER BY ind),
grouped AS (
  SELECT CASE
           WHEN u.age BETWEEN 18 AND 24 THEN '18-24'
           WHEN u.age BETWEEN 25 AND 35 THEN '25-35'
           WHEN u.age BETWEEN 36 AND 50 THEN '36-50'
           WHEN u.age > 50 THEN '+50'
         END AS age_group,
         p.follower_count
  FROM pins p JOIN users u ON p.ind = u.ind
  WHERE p.follower_count IS NOT NULL
)
SELECT age_group, median(CAST(follower_count AS DOUBLE)) AS median_follower_count
FROM grouped
WHERE age_group IS NOT NULL
GROUP BY age_group
ORDER BY CASE age_group WHEN '18-24' THEN 1 WHEN '25-35' THEN 2 WHEN '36-50' THEN 3 ELSE 4 END
