-- The raw geolocation record as the emulator posts it.
CREATE TABLE raw (
  ind BIGINT,
  "timestamp" VARCHAR,
  latitude DOUBLE,
  longitude DOUBLE,
  country VARCHAR
);
