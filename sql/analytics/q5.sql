-- Q5: the median follower count per age group (exact: an even-sized group averages its two
-- middle values; unknown counts left out).
SELECT u.age_group, median(CAST(p.follower_count AS DOUBLE)) AS median_follower_count
FROM pin_posts p JOIN user_posts u ON p.ind = u.ind
WHERE p.follower_count IS NOT NULL AND u.age_group IS NOT NULL
GROUP BY u.age_group, u.age_group_order
ORDER BY u.age_group_order
