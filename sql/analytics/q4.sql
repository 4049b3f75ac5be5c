-- Q4: the most popular category per age group: 18-24, 25-35, 36-50, +50 (ties kept; users under
-- 18 belong to no group). Posts are counted once per id.
WITH pins AS (SELECT DISTINCT ON (ind) ind, category FROM pin ORDER BY ind),
users AS (SELECT DISTINCT ON (ind) ind, age FROM "user" ORDER BY ind),
grouped AS (
  SELECT CASE
           WHEN u.age BETWEEN 18 AND 24 THEN '18-24'
           WHEN u.age BETWEEN 25 AND 35 THEN '25-35'
           WHEN u.age BETWEEN 36 AND 50 THEN '36-50'
           WHEN u.age > 50 THEN '+50'
         END AS age_group,
         p.category
  FROM pins p JOIN users u ON p.ind = u.ind
),
counts AS (
  SELECT age_group, category, COUNT(*) AS category_count
  FROM grouped
  WHERE age_group IS NOT NULL AND category IS NOT NULL
  GROUP BY age_group, category
),
ranked AS (
  SELECT age_group, category, category_count,
         RANK() OVER (PARTITION BY age_group ORDER BY category_count DESC) AS place
  FROM counts
)
SELECT age_group, category, category_count
FROM ranked
WHERE place = 1
ORDER BY CASE age_group WHEN '18-24' THEN 1 WHEN '25-35' THEN 2 WHEN '36-50' THEN 3 ELSE 4 END, category
