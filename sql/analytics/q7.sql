-- Q7: the median follower count of users by the year they joined, 2015 to 2020 (exact medians;
-- one row per id in each table).
SELECT CAST(date_part('year', u.date_joined) AS BIGINT) AS post_year,
       median(CAST(p.follower_count AS DOUBLE)) AS median_follower_count
FROM pin_posts p JOIN user_posts u ON p.ind = u.ind
WHERE date_part('year', u.date_joined) BETWEEN 2015 AND 2020 AND p.follower_count IS NOT NULL
GROUP BY 1
ORDER BY 1
