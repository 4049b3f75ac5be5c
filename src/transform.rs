//! Runs a stream's cleaning SQL through DataFusion over one decoded batch (the table `raw`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

/// The cleaning SQL failed. The user's to fix: nothing of the batch is committed and no checkpoint
/// moves, so the batch runs again once the SQL is fixed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cleaning SQL {path} failed: {message}\nfix the SQL (it reads the table `raw`) and restart; the batch will be retried and nothing was committed"
)]
pub struct TransformError {
    /// The SQL file.
    pub path: PathBuf,
    /// DataFusion's message.
    pub message: String,
}

/// A stream's cleaning step: its SQL and a DataFusion session to run it in.
pub struct Cleaning {
    ctx: SessionContext,
    sql: String,
    path: PathBuf,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
}

impl std::fmt::Debug for Cleaning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleaning")
            .field("path", &self.path)
            .finish()
    }
}

impl Cleaning {
    /// Plans the SQL against the input schema, so a broken file fails at start-up.
    pub async fn new(
        sql: &str,
        path: &Path,
        input_schema: SchemaRef,
    ) -> Result<Self, TransformError> {
        let config = SessionConfig::new().with_target_partitions(1);
        let mut cleaning = Self {
            ctx: SessionContext::new_with_config(config),
            sql: sql.to_owned(),
            path: path.to_owned(),
            output_schema: Arc::clone(&input_schema),
            input_schema,
        };
        let empty = RecordBatch::new_empty(Arc::clone(&cleaning.input_schema));
        let frame = cleaning.frame(empty).await?;
        cleaning.output_schema = Arc::new(frame.schema().as_arrow().clone());
        Ok(cleaning)
    }

    /// The schema of the cleaned rows.
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }

    /// Runs the SQL over one batch.
    pub async fn apply(&self, rows: RecordBatch) -> Result<Vec<RecordBatch>, TransformError> {
        let frame = self.frame(rows).await?;
        frame.collect().await.map_err(|e| self.error(e))
    }

    async fn frame(
        &self,
        rows: RecordBatch,
    ) -> Result<datafusion::dataframe::DataFrame, TransformError> {
        let table = MemTable::try_new(Arc::clone(&self.input_schema), vec![vec![rows]])
            .map_err(|e| self.error(e))?;
        self.ctx
            .deregister_table("raw")
            .map_err(|e| self.error(e))?;
        self.ctx
            .register_table("raw", Arc::new(table))
            .map_err(|e| self.error(e))?;
        self.ctx.sql(&self.sql).await.map_err(|e| self.error(e))
    }

    fn error(&self, e: datafusion::error::DataFusionError) -> TransformError {
        TransformError {
            path: self.path.clone(),
            message: e.strip_backtrace(),
        }
    }
}
