-- Q4: the most popular category per age group: 18-24, 25-35, 36-50, +50 (ties kept; users under
-- 18 belong to no group). Posts are counted once per id.
WITH counts AS (
  SELECT u.age_group, u.age_group_order, p.category, COUNT(*) AS category_count
  FROM pin_posts p JOIN user_posts u ON p.ind = u.ind
  WHERE u.age_group IS NOT NULL AND p.category IS NOT NULL
  GROUP BY u.age_group, u.age_group_order, p.category
),
ranked AS (
  SELECT age_group, age_group_order, category, category_count,
         RANK() OVER (PARTITION BY age_group ORDER BY category_count DESC) AS place
  FROM counts
)
SELECT age_group, category, category_count
FROM ranked
WHERE place = 1
ORDER BY age_group_order, category
