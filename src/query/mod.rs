//! SQL over the pipeline's Delta tables with DataFusion: every table of the config (and its
//! dead-letter table) registered through delta-rs's table provider (file pruning, no copy into
//! memory), local or on object storage, optionally as of a Delta version or timestamp; and the
//! tables of records as read (raw, dead letters) read back as records (`records`).

mod output;
pub mod records;

pub use output::{OutputFormat, render_table, write_output};
pub use records::RecordTable;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;

use crate::config::Pipeline;

/// A query failed. The message is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is wrong (syntax, unknown column or table). The user's to fix.
    #[error("{0}")]
    Sql(String),
    /// A table could not be opened.
    #[error("table {name} ({uri}): {message}")]
    Table {
        /// The table's name.
        name: String,
        /// Its location.
        uri: String,
        /// What went wrong.
        message: String,
    },
    /// `--as-of` is malformed.
    #[error(
        "--as-of `{0}`: write TABLE=VERSION (e.g. pin=3) or TABLE=TIMESTAMP (e.g. pin=2024-05-01T12:00:00Z)"
    )]
    AsOf(String),
    /// Writing the result failed.
    #[error("cannot write the result: {0}")]
    Output(String),
}

/// Which version of a table to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    /// A table version.
    Version(u64),
    /// The version current at a time.
    Timestamp(DateTime<Utc>),
}

impl AsOf {
    /// Parses `TABLE=VERSION` or `TABLE=TIMESTAMP`.
    pub fn parse(text: &str) -> Result<(String, Self), QueryError> {
        let (table, at) = text
            .split_once('=')
            .ok_or_else(|| QueryError::AsOf(text.to_owned()))?;
        let at = match at.parse::<u64>() {
            Ok(version) => Self::Version(version),
            Err(_) => Self::Timestamp(
                DateTime::parse_from_rfc3339(at)
                    .map_err(|_| QueryError::AsOf(text.to_owned()))?
                    .to_utc(),
            ),
        };
        Ok((table.to_owned(), at))
    }
}

/// One registered table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Its SQL name.
    pub name: String,
    /// Its location.
    pub uri: String,
    /// The version read; `None` when the table does not exist yet.
    pub version: Option<u64>,
}

/// The pipeline's tables in a DataFusion session.
pub struct TableSet {
    ctx: SessionContext,
    /// Every table of the config, registered or missing.
    pub tables: Vec<TableInfo>,
}

impl std::fmt::Debug for TableSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableSet")
            .field("tables", &self.tables)
            .finish()
    }
}

/// A query's result.
#[derive(Debug)]
pub struct QueryResult {
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Their schema (also when there are no rows).
    pub schema: SchemaRef,
    /// How long planning and running took.
    pub elapsed: Duration,
}

impl QueryResult {
    /// Rows in the result.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What an error says of a table with no data yet.
const NO_DATA_YET: &str = "has no data yet";

impl TableSet {
    /// Registers the pipeline's tables and dead-letter tables; `as_of` pins some to a version.
    pub async fn open(pipeline: &Pipeline, as_of: &[(String, AsOf)]) -> Result<Self, QueryError> {
        Self::open_tables(&pipeline.tables(), as_of, &pipeline.storage).await
    }

    /// Registers each `(name, uri)` table; `as_of` pins some to a version.
    pub async fn open_tables(
        tables: &[(String, String)],
        as_of: &[(String, AsOf)],
        storage: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, QueryError> {
        let ctx = SessionContext::new();
        if let Some((unknown, _)) = as_of
            .iter()
            .find(|(t, _)| !tables.iter().any(|(name, _)| name == t))
        {
            let names: Vec<&str> = tables.iter().map(|(name, _)| name.as_str()).collect();
            return Err(QueryError::AsOf(format!(
                "{unknown}=…: no table {unknown} (tables: {})",
                names.join(", ")
            )));
        }
        let mut registered = Vec::with_capacity(tables.len());
        for (name, uri) in tables {
            let pinned = as_of.iter().find(|(t, _)| t == name).map(|(_, a)| a);
            registered.push(register(&ctx, name, uri, pinned, storage).await?);
        }
        Ok(Self {
            ctx,
            tables: registered,
        })
    }

    /// Registers each `*.sql` file of `dir` as a view named after the file (`pin_posts.sql` →
    /// `pin_posts`), in file-name order, so a view may build on those before it. A view over a
    /// table with no data yet is left out, with a warning; any other failure is an error.
    pub async fn register_views(&self, dir: &Path) -> Result<Vec<String>, QueryError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| {
                QueryError::Output(format!(
                    "cannot read the views folder {}: {e}",
                    dir.display()
                ))
            })?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        let mut registered = Vec::with_capacity(files.len());
        for file in files {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let body = std::fs::read_to_string(&file)
                .map_err(|e| QueryError::Output(format!("cannot read {}: {e}", file.display())))?;
            let create = format!(
                "CREATE VIEW \"{name}\" AS {}",
                body.trim().trim_end_matches(';')
            );
            match self.ctx.sql(&create).await {
                Ok(_) => registered.push(name),
                Err(e) => match self.explain(e) {
                    // It reads a table with no data yet: the view comes with the table.
                    QueryError::Sql(message) if message.contains(NO_DATA_YET) => {
                        tracing::warn!(view = %name, error = %message, "view left out");
                    }
                    e => return Err(QueryError::Sql(format!("view {}: {e}", file.display()))),
                },
            }
        }
        Ok(registered)
    }

    /// Runs one SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let frame = self.ctx.sql(sql).await.map_err(|e| self.explain(e))?;
        let schema: SchemaRef = std::sync::Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(|e| self.explain(e))?;
        Ok(QueryResult {
            batches,
            schema,
            elapsed: started.elapsed(),
        })
    }

    /// One line, with a hint when a known table simply has no data yet.
    fn explain(&self, e: datafusion::error::DataFusionError) -> QueryError {
        let message = e.strip_backtrace().replace('\n', " ");
        for table in self.tables.iter().filter(|t| t.version.is_none()) {
            let named = |prefix: &str| message.contains(&format!("{prefix}{}'", table.name));
            if named("'") || named(".") {
                return QueryError::Sql(format!(
                    "{message} (table {} {NO_DATA_YET}: no Delta table at {}; run the engine first)",
                    table.name, table.uri
                ));
            }
        }
        QueryError::Sql(message)
    }
}

async fn register(
    ctx: &SessionContext,
    name: &str,
    uri: &str,
    as_of: Option<&AsOf>,
    storage: &std::collections::BTreeMap<String, String>,
) -> Result<TableInfo, QueryError> {
    let err = |message: String| QueryError::Table {
        name: name.to_owned(),
        uri: uri.to_owned(),
        message,
    };
    let url = url::Url::parse(uri).map_err(|e| err(e.to_string()))?;
    let mut table = deltalake::DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| err(e.to_string()))?
        .with_storage_options(
            storage
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
        .build()
        .map_err(|e| err(e.to_string()))?;
    // Loaded at once, without a separate existence check: that lists the whole log folder again
    // (on a local disk, every commit file of the log retention).
    let loaded = if url.to_file_path().is_ok_and(|p| !p.exists()) {
        Err(deltalake::DeltaTableError::NotATable(uri.to_owned()))
    } else {
        match as_of {
            None => table.load().await,
            Some(AsOf::Version(v)) => table.load_version(*v).await,
            Some(AsOf::Timestamp(at)) => table.load_with_datetime(*at).await,
        }
    };
    match loaded {
        Ok(()) => {}
        Err(deltalake::DeltaTableError::NotATable(_)) if as_of.is_some() => {
            return Err(err("no Delta table here to time-travel in".into()));
        }
        Err(deltalake::DeltaTableError::NotATable(_)) => {
            return Ok(TableInfo {
                name: name.to_owned(),
                uri: uri.to_owned(),
                version: None,
            });
        }
        Err(e) => return Err(err(e.to_string())),
    }
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| err(e.to_string()))?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| err(e.strip_backtrace()))?;
    ctx.register_table(name, provider)
        .map_err(|e| err(e.strip_backtrace()))?;
    Ok(TableInfo {
        name: name.to_owned(),
        uri: uri.to_owned(),
        version: table.version(),
    })
}
