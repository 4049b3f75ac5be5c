-- One row per post of the geo table (see pin_posts).
SELECT DISTINCT ON (ind) * FROM geo ORDER BY ind
