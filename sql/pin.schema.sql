-- The raw pin record as the emulator posts it (one JSON object per Kinesis record).
-- Fields missing from a record are NULL; a value of the wrong type sends the record to the
-- dead-letter table `pin_dead_letters`.
CREATE TABLE raw (
  "index" BIGINT,
  unique_id VARCHAR,
  title VARCHAR,
  description VARCHAR,
  poster_name VARCHAR,
  follower_count VARCHAR,
  tag_list VARCHAR,
  is_image_or_video VARCHAR,
  image_src VARCHAR,
  downloaded BIGINT,
  save_location VARCHAR,
  category VARCHAR
);
