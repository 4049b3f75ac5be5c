-- The raw user record as the emulator posts it.
CREATE TABLE raw (
  ind BIGINT,
  first_name VARCHAR,
  last_name VARCHAR,
  age BIGINT,
  date_joined VARCHAR
);
