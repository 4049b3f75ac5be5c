//! The Pinterest source tables (pin, geo, user), generated deterministically for a seed, with the
//! value distributions and dirty values of REFERENCE.md §1; written as JSON lines or CSV, or loaded
//! into SQLite / MySQL under the original table names.
//!
//! Row `k` of each table shares one id, so a post is the triple `post(k)`. Every row is generated
//! from its own seeded random stream, so any row can be produced on its own (the emulator picks
//! random offsets, as the original did).

mod generator;
mod output;
mod sql;

pub use generator::{CATEGORIES, Dataset, DatasetSpec};
pub use output::{FileFormat, read_json_lines, write_files};
pub use sql::{SqlTables, load_sql};

use serde::{Deserialize, Serialize};

/// A row of `pinterest_data`, fields in source order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinRow {
    /// The post id.
    pub index: i64,
    /// A uuid4.
    pub unique_id: String,
    /// The title (or a placeholder).
    pub title: String,
    /// The description (or a placeholder).
    pub description: String,
    /// The poster's name.
    pub poster_name: String,
    /// `437`, `26k`, `6M` or `User Info Error`: text, as in the source.
    pub follower_count: String,
    /// Comma-separated tags.
    pub tag_list: String,
    /// `image`, `video` or `multi-video(story page format)`.
    pub is_image_or_video: String,
    /// The image URL (or a placeholder).
    pub image_src: String,
    /// 1 or 0.
    pub downloaded: i64,
    /// `Local save in /data/<category>`.
    pub save_location: String,
    /// One of 13 categories.
    pub category: String,
}

/// A row of `geolocation_data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeoRow {
    /// The post id.
    pub ind: i64,
    /// `YYYY-MM-DD HH:MM:SS` (or the `T` form).
    pub timestamp: String,
    /// Degrees, leaning towards -90.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
    /// A Faker-style country name.
    pub country: String,
}

/// A row of `user_data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRow {
    /// The post id.
    pub ind: i64,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Age, about 20..60.
    pub age: i64,
    /// `YYYY-MM-DD HH:MM:SS` (or the `T` form), 2015..2017.
    pub date_joined: String,
}

/// One post: the three rows sharing an id.
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    /// The pin row.
    pub pin: PinRow,
    /// The geo row.
    pub geo: GeoRow,
    /// The user row.
    pub user: UserRow,
}

/// The columns of `pinterest_data`, in source order (REFERENCE.md §1).
pub const PIN_COLUMNS: [&str; 12] = [
    "index",
    "unique_id",
    "title",
    "description",
    "poster_name",
    "follower_count",
    "tag_list",
    "is_image_or_video",
    "image_src",
    "downloaded",
    "save_location",
    "category",
];
/// The columns of `geolocation_data`, in source order.
pub const GEO_COLUMNS: [&str; 5] = ["ind", "timestamp", "latitude", "longitude", "country"];
/// The columns of `user_data`, in source order.
pub const USER_COLUMNS: [&str; 5] = ["ind", "first_name", "last_name", "age", "date_joined"];

/// The original table names, in (pin, geo, user) order.
pub const TABLE_NAMES: [&str; 3] = ["pinterest_data", "geolocation_data", "user_data"];

/// A dataset operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A JSON line did not parse.
    #[error("{path} line {line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The 1-based line.
        line: usize,
        /// serde's message.
        message: String,
    },
    /// The database refused.
    #[error("database {url}: {source}")]
    Sql {
        /// The database URL (without its password).
        url: String,
        /// sqlx's error.
        source: sqlx::Error,
    },
    /// The inputs do not line up (different row counts in the three tables, …).
    #[error("{0}")]
    Invalid(String),
}
