-- Q8: the median follower count of users by joining year (2015 to 2020) and age group.
WITH pins AS (SELECT DISTINCT ON (ind) ind, follower_count FROM pin ORDER BY ind),
users AS (SELECT DISTINCT ON (ind) ind, age, date_joined FROM "user" ORDER BY ind),
grouped AS (
  SELECT CASE
           WHEN u.age BETWEEN 18 AND 24 THEN '18-24'
           WHEN u.age BETWEEN 25 AND 35 THEN '25-35'
           WHEN u.age BETWEEN 36 AND 50 THEN '36-50'
           WHEN u.age > 50 THEN '+50'
         END AS age_group,
         CAST(date_part('year', u.date_joined) AS BIGINT) AS post_year,
         p.follower_count
  FROM pins p JOIN users u ON p.ind = u.ind
  WHERE p.follower_count IS NOT NULL AND date_part('year', u.date_joined) BETWEEN 2015 AND 2020
)
SELECT age_group, post_year, median(CAST(follower_count AS DOUBLE)) AS median_follower_count
FROM grouped
WHERE age_group IS NOT NULL
GROUP BY age_group, post_year
ORDER BY CASE age_group WHEN '18-24' THEN 1 WHEN '25-35' THEN 2 WHEN '36-50' THEN 3 ELSE 4 END, post_year
