-- Q6: how many users joined each year, 2015 to 2020 (the year of date_joined; one user row per id).
SELECT CAST(date_part('year', date_joined) AS BIGINT) AS post_year,
       COUNT(DISTINCT ind) AS number_users_joined
FROM "user"
WHERE date_part('year', date_joined) BETWEEN 2015 AND 2020
GROUP BY 1
ORDER BY 1
