-- Q3b: the country whose top user has the most followers (one row; a tie goes to the first
-- country in alphabetical order).
SELECT g.country, MAX(p.follower_count) AS follower_count
FROM pin_posts p JOIN geo_posts g ON p.ind = g.ind
WHERE p.follower_count IS NOT NULL AND g.country IS NOT NULL
GROUP BY g.country
ORDER BY follower_count DESC, g.country
LIMIT 1
