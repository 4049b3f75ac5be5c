-- One row per post of the user table (see pin_posts), with the user's age group: 18-24, 25-35,
-- 36-50 or +50 (NULL under 18), and age_group_order to sort the groups by age.
SELECT DISTINCT ON (ind) *,
       CASE
         WHEN age BETWEEN 18 AND 24 THEN '18-24'
         WHEN age BETWEEN 25 AND 35 THEN '25-35'
         WHEN age BETWEEN 36 AND 50 THEN '36-50'
         WHEN age > 50 THEN '+50'
       END AS age_group,
       CASE
         WHEN age BETWEEN 18 AND 24 THEN 1
         WHEN age BETWEEN 25 AND 35 THEN 2
         WHEN age BETWEEN 36 AND 50 THEN 3
         WHEN age > 50 THEN 4
       END AS age_group_order
FROM "user"
ORDER BY ind
