-- Cleans the geo stream (REFERENCE.md section 2).
--
-- * coordinates = [latitude, longitude] as an array of doubles; latitude and longitude dropped.
-- * timestamp parsed into a timestamp; both `2020-08-28 03:52:47` and `2020-08-28T03:52:47` parse,
--   anything unparseable becomes NULL (the record is kept).
SELECT
  ind,
  country,
  make_array(latitude, longitude) AS coordinates,
  TRY_CAST("timestamp" AS TIMESTAMP) AS "timestamp"
FROM raw
