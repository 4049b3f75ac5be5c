//! Where the emulator's posts come from.

use std::sync::Arc;

use crate::dataset::{Dataset, DatasetError, Post, SqlTables};

/// The rows the emulator posts.
#[derive(Debug, Clone)]
pub enum PostSource {
    /// The built-in generator.
    Generator(Dataset),
    /// Posts read from JSON-lines files (`kinesis-delta dataset --format jsonl`).
    Files(Arc<Vec<Post>>),
    /// The three tables in a SQL database.
    Sql(SqlTables),
}

impl PostSource {
    /// Rows per table.
    pub fn len(&self) -> usize {
        match self {
            Self::Generator(d) => d.len(),
            Self::Files(posts) => posts.len(),
            Self::Sql(tables) => tables.len(),
        }
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The post at `offset`.
    pub async fn post(&self, offset: usize) -> Result<Post, DatasetError> {
        match self {
            Self::Generator(d) => Ok(d.post(offset)),
            Self::Files(posts) => posts
                .get(offset)
                .cloned()
                .ok_or_else(|| DatasetError::Invalid(format!("no row at offset {offset}"))),
            Self::Sql(tables) => tables.post(offset).await,
        }
    }
}
