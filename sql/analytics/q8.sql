-- Q8: the median follower count of users by joining year (2015 to 2020) and age group.
SELECT u.age_group, CAST(date_part('year', u.date_joined) AS BIGINT) AS post_year,
       median(CAST(p.follower_count AS DOUBLE)) AS median_follower_count
FROM pin_posts p JOIN user_posts u ON p.ind = u.ind
WHERE p.follower_count IS NOT NULL AND u.age_group IS NOT NULL
  AND date_part('year', u.date_joined) BETWEEN 2015 AND 2020
GROUP BY u.age_group, u.age_group_order, 2
ORDER BY u.age_group_order, post_year
