-- Cleans the pin stream (REFERENCE.md section 2).
--
-- Input: the table `raw`, one row per Kinesis record (per user record of a KPL aggregate), with
-- the columns of pin.schema.sql plus the record's metadata (_stream, _shard_id, _sequence_number,
-- _partition_key, _approximate_arrival, _sub_sequence_number).
--
-- * Every "no data" placeholder and every empty string becomes NULL, in whichever column it appears.
-- * follower_count becomes a number: 26k -> 26000, 6M -> 6000000, digits as they are, else NULL.
-- * save_location keeps only the path; `index` is renamed `ind`; `downloaded` is not kept.
-- * Anything else passes through unchanged; no record is dropped here.
WITH placeholder AS (
  -- The values the source writes where it has no data: each becomes NULL below, in any column.
  -- Add one here.
  SELECT make_array(
    '',
    'No Title Data Available',
    'No description available Story format',
    'No description available',
    'Untitled',
    'User Info Error',
    'N,o, ,T,a,g,s, ,A,v,a,i,l,a,b,l,e',
    'Image src error.'
  ) AS list
),
no_placeholders AS (
  SELECT
    "index",
    CASE WHEN array_has(p.list, unique_id) THEN NULL ELSE unique_id END AS unique_id,
    CASE WHEN array_has(p.list, title) THEN NULL ELSE title END AS title,
    CASE WHEN array_has(p.list, description) THEN NULL ELSE description END AS description,
    CASE WHEN array_has(p.list, poster_name) THEN NULL ELSE poster_name END AS poster_name,
    CASE WHEN array_has(p.list, follower_count) THEN NULL ELSE follower_count END AS follower_count,
    CASE WHEN array_has(p.list, tag_list) THEN NULL ELSE tag_list END AS tag_list,
    CASE WHEN array_has(p.list, is_image_or_video) THEN NULL ELSE is_image_or_video END AS is_image_or_video,
    CASE WHEN array_has(p.list, image_src) THEN NULL ELSE image_src END AS image_src,
    CASE WHEN array_has(p.list, save_location) THEN NULL ELSE save_location END AS save_location,
    CASE WHEN array_has(p.list, category) THEN NULL ELSE category END AS category
  FROM raw CROSS JOIN placeholder p
)
SELECT
  "index" AS ind,
  unique_id,
  title,
  description,
  CASE
    WHEN follower_count ~ '^[0-9]{1,15}$' THEN CAST(follower_count AS BIGINT)
    WHEN follower_count ~ '^[0-9]{1,12}k$' THEN CAST(rtrim(follower_count, 'k') AS BIGINT) * 1000
    WHEN follower_count ~ '^[0-9]{1,9}M$' THEN CAST(rtrim(follower_count, 'M') AS BIGINT) * 1000000
    ELSE NULL
  END AS follower_count,
  poster_name,
  tag_list,
  is_image_or_video,
  image_src,
  regexp_replace(save_location, '^Local save in ', '') AS save_location,
  category
FROM no_placeholders
