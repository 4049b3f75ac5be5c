//! The tables in a SQL database (SQLite or MySQL/MariaDB, through sqlx), under the original names
//! `pinterest_data`, `geolocation_data`, `user_data`, and read back one row at a random offset, as
//! the original emulator did (`SELECT * FROM t LIMIT 1 OFFSET k`).

use sqlx::any::{AnyPoolOptions, install_default_drivers};
// Table names and column counts below are constants of this module, never user input.
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{Dataset, DatasetError, GeoRow, PinRow, Post, UserRow};

const CREATE: [&str; 3] = [
    "CREATE TABLE pinterest_data (`index` BIGINT, `unique_id` TEXT, `title` TEXT, `description` TEXT, \
     `poster_name` TEXT, `follower_count` TEXT, `tag_list` TEXT, `is_image_or_video` TEXT, `image_src` TEXT, \
     `downloaded` BIGINT, `save_location` TEXT, `category` TEXT)",
    "CREATE TABLE geolocation_data (`ind` BIGINT, `timestamp` TEXT, `latitude` DOUBLE, `longitude` DOUBLE, `country` TEXT)",
    "CREATE TABLE user_data (`ind` BIGINT, `first_name` TEXT, `last_name` TEXT, `age` BIGINT, `date_joined` TEXT)",
];

/// The URL without a password, for messages.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

async fn connect(url: &str) -> Result<AnyPool, DatasetError> {
    install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .map_err(|source| DatasetError::Sql {
            url: shown(url),
            source,
        })
}

/// Creates the three tables (replacing existing ones) and inserts every row; returns the rows per table.
pub async fn load_sql(dataset: &Dataset, url: &str) -> Result<usize, DatasetError> {
    let pool = connect(url).await?;
    let err = |source| DatasetError::Sql {
        url: shown(url),
        source,
    };
    for (table, create) in super::TABLE_NAMES.iter().zip(CREATE) {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&pool)
            .await
            .map_err(err)?;
        sqlx::query(create).execute(&pool).await.map_err(err)?;
    }
    let posts: Vec<Post> = dataset.posts().collect();
    for chunk in posts.chunks(200) {
        let mut tx = pool.begin().await.map_err(err)?;
        let mut pin = sqlx::query(AssertSqlSafe(insert("pinterest_data", 12, chunk.len())));
        for p in chunk {
            let r = &p.pin;
            pin = pin
                .bind(r.index)
                .bind(&r.unique_id)
                .bind(&r.title)
                .bind(&r.description)
                .bind(&r.poster_name)
                .bind(&r.follower_count)
                .bind(&r.tag_list)
                .bind(&r.is_image_or_video)
                .bind(&r.image_src)
                .bind(r.downloaded)
                .bind(&r.save_location)
                .bind(&r.category);
        }
        pin.execute(&mut *tx).await.map_err(err)?;
        let mut geo = sqlx::query(AssertSqlSafe(insert("geolocation_data", 5, chunk.len())));
        for p in chunk {
            let r = &p.geo;
            geo = geo
                .bind(r.ind)
                .bind(&r.timestamp)
                .bind(r.latitude)
                .bind(r.longitude)
                .bind(&r.country);
        }
        geo.execute(&mut *tx).await.map_err(err)?;
        let mut user = sqlx::query(AssertSqlSafe(insert("user_data", 5, chunk.len())));
        for p in chunk {
            let r = &p.user;
            user = user
                .bind(r.ind)
                .bind(&r.first_name)
                .bind(&r.last_name)
                .bind(r.age)
                .bind(&r.date_joined);
        }
        user.execute(&mut *tx).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
    }
    Ok(posts.len())
}

fn insert(table: &str, columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(","));
    format!("INSERT INTO {table} VALUES {}", vec![row; rows].join(","))
}

/// The three tables in a database, read like the original emulator read them.
#[derive(Debug, Clone)]
pub struct SqlTables {
    pool: AnyPool,
    url: String,
    rows: usize,
}

impl SqlTables {
    /// Connects and counts the rows (the smallest of the three tables).
    pub async fn open(url: &str) -> Result<Self, DatasetError> {
        let pool = connect(url).await?;
        let mut rows = usize::MAX;
        for table in super::TABLE_NAMES {
            let count: i64 = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|source| DatasetError::Sql {
                    url: shown(url),
                    source,
                })?;
            rows = rows.min(usize::try_from(count).unwrap_or(0));
        }
        Ok(Self {
            pool,
            url: url.to_owned(),
            rows,
        })
    }

    /// Rows per table.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The three rows at `offset` (by insertion order).
    pub async fn post(&self, offset: usize) -> Result<Post, DatasetError> {
        let err = |source| DatasetError::Sql {
            url: shown(&self.url),
            source,
        };
        let at = |table: &str| format!("SELECT * FROM {table} LIMIT 1 OFFSET {offset}");
        let r = sqlx::query(AssertSqlSafe(at("pinterest_data")))
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        let pin = PinRow {
            index: r.try_get("index").map_err(err)?,
            unique_id: r.try_get("unique_id").map_err(err)?,
            title: r.try_get("title").map_err(err)?,
            description: r.try_get("description").map_err(err)?,
            poster_name: r.try_get("poster_name").map_err(err)?,
            follower_count: r.try_get("follower_count").map_err(err)?,
            tag_list: r.try_get("tag_list").map_err(err)?,
            is_image_or_video: r.try_get("is_image_or_video").map_err(err)?,
            image_src: r.try_get("image_src").map_err(err)?,
            downloaded: r.try_get("downloaded").map_err(err)?,
            save_location: r.try_get("save_location").map_err(err)?,
            category: r.try_get("category").map_err(err)?,
        };
        let r = sqlx::query(AssertSqlSafe(at("geolocation_data")))
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        let geo = GeoRow {
            ind: r.try_get("ind").map_err(err)?,
            timestamp: r.try_get("timestamp").map_err(err)?,
            latitude: r.try_get("latitude").map_err(err)?,
            longitude: r.try_get("longitude").map_err(err)?,
            country: r.try_get("country").map_err(err)?,
        };
        let r = sqlx::query(AssertSqlSafe(at("user_data")))
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
        let user = UserRow {
            ind: r.try_get("ind").map_err(err)?,
            first_name: r.try_get("first_name").map_err(err)?,
            last_name: r.try_get("last_name").map_err(err)?,
            age: r.try_get("age").map_err(err)?,
            date_joined: r.try_get("date_joined").map_err(err)?,
        };
        Ok(Post { pin, geo, user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::DatasetSpec;

    #[tokio::test]
    async fn sqlite_holds_the_original_tables_and_serves_rows_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("pinterest.db").display()
        );
        let dataset = Dataset::new(DatasetSpec {
            rows: 450,
            ..DatasetSpec::default()
        });
        assert_eq!(load_sql(&dataset, &url).await.unwrap(), 450);
        let tables = SqlTables::open(&url).await.unwrap();
        assert_eq!(tables.len(), 450);
        for k in [0, 17, 449] {
            assert_eq!(tables.post(k).await.unwrap(), dataset.post(k));
        }
    }
}
