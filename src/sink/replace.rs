//! Replacing every row of a table in one commit (`kinesis-delta rebuild`): new files are written
//! beside the old ones, then one commit removes every file of the version they were built from
//! and adds the new ones, with the new schema if it changed. Readers see the old rows or the new
//! ones, never a mix. The commit is made only as the very next version: any commit in between
//! (an engine's batch, a compaction) and it is not made, so the caller reads the table again.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTableError, ObjectStoreError};

use super::delta::{parquet_properties, table_arrow_schema};
use super::schema::{conform, delta_compatible};
use super::{CommitInfo, DeltaSink, SinkError};

/// Parquet files written for a replacement of a table's rows, not committed yet.
pub struct Replacement {
    writer: RecordBatchWriter,
    schema: SchemaRef,
    adds: Vec<Add>,
    rows: u64,
    /// Named in the `commitInfo` of its commit, which tells it from any other.
    id: String,
    /// The versions it was committed as, or tried to be (each attempt is the next version of
    /// the one loaded, and only that).
    tried: Vec<i64>,
}

/// The `commitInfo` key naming the replacement a commit is.
const REPLACEMENT_KEY: &str = "kinesisDeltaReplacement";

impl std::fmt::Debug for Replacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replacement")
            .field("files", &self.adds.len())
            .field("rows", &self.rows)
            .finish()
    }
}

impl Replacement {
    /// Writes `batch`, its columns converted to the replacement's schema.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), DeltaTableError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = conform(batch, &self.schema)?;
        self.rows += batch.num_rows() as u64;
        self.writer.write_with_mode(batch, WriteMode::Default).await
    }

    /// Finishes the files written so far.
    pub async fn flush(&mut self) -> Result<(), DeltaTableError> {
        self.adds.extend(self.writer.flush().await?);
        Ok(())
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl DeltaSink {
    /// A replacement of the table's rows by rows of `schema` (the table's schema becomes it),
    /// written with the table's properties (which columns get statistics).
    pub async fn replacement(&self, schema: &SchemaRef) -> Result<Replacement, SinkError> {
        let schema = delta_compatible(schema);
        let writer = RecordBatchWriter::try_new_checked(
            &self.uri,
            schema.clone(),
            None,
            Some(self.storage.clone()),
        )
        .await
        .map_err(|source| self.error(source))?
        .with_writer_properties(parquet_properties());
        Ok(Replacement {
            writer,
            schema,
            adds: Vec::new(),
            rows: 0,
            id: uuid::Uuid::new_v4().to_string(),
            tried: Vec::new(),
        })
    }

    /// Commits `replacement` as the version after the loaded one: every file of the loaded
    /// version removed, the replacement's added, the schema changed to the replacement's if it
    /// differs. `None` when another commit took that version first (nothing was committed; the
    /// replacement's files stay for a next attempt).
    pub async fn replace(
        &mut self,
        replacement: &mut Replacement,
        info: CommitInfo,
    ) -> Result<Option<i64>, SinkError> {
        replacement
            .flush()
            .await
            .map_err(|source| self.error(source))?;
        // Committed already, by an attempt told otherwise: never again (its files would be
        // removed and added in one commit, which leaves them removed).
        if let Some(version) = self.committed_as(replacement).await? {
            return Ok(Some(version));
        }
        let target = self.version().map_or(0, |v| v + 1);
        let snapshot = self.table.snapshot().map_err(|source| self.error(source))?;
        let mut actions: Vec<Action> = Vec::new();
        let current = table_arrow_schema(&self.table).map_err(|source| self.error(source))?;
        if current.fields() != replacement.schema.fields() {
            actions.push(
                self.schema_change(&replacement.schema)
                    .map_err(|source| self.error(source))?,
            );
        }
        actions.extend(
            snapshot
                .log_data()
                .iter()
                .map(|f| Action::Remove(f.remove_action(true))),
        );
        actions.extend(replacement.adds.iter().cloned().map(Action::Add));
        let mut info = info;
        info.insert(REPLACEMENT_KEY.to_owned(), replacement.id.clone().into());
        replacement.tried.push(target);
        let properties = CommitProperties::default()
            .with_max_retries(0)
            .with_metadata(info);
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        };
        let committed = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await;
        match committed {
            Ok(done) => {
                self.schema = Some(Arc::clone(&replacement.schema));
                // Loaded again before the next use; a failure to load it now is no failure of
                // the commit.
                if let Err(e) = self.table.update_state().await {
                    tracing::warn!(table = %self.uri, error = %e, "could not load the table after the replacement");
                }
                Ok(Some(i64::try_from(done.version()).unwrap_or(i64::MAX)))
            }
            // The commit may have landed whatever the error says (an answer lost on its way
            // back, a checkpoint after it that failed): then version `target` is it.
            Err(e) if self.committed_as(replacement).await? == Some(target) => {
                tracing::warn!(table = %self.uri, error = %e, "the replacement was committed despite the error");
                Ok(Some(target))
            }
            Err(DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_) | TransactionError::CommitConflict(_),
            }) => Ok(None),
            Err(DeltaTableError::ObjectStore {
                source: ObjectStoreError::AlreadyExists { .. },
            }) => Ok(None),
            Err(source) => Err(self.error(source)),
        }
    }

    /// The version `replacement` was committed as, if it was: read from the commit files of the
    /// versions it tried (an unreadable one is an error, never taken for "not committed").
    pub async fn committed_as(&self, replacement: &Replacement) -> Result<Option<i64>, SinkError> {
        for &version in &replacement.tried {
            let info = self.commit_info_of(version).await?.flatten();
            let named = info
                .as_ref()
                .and_then(|i| i.get(REPLACEMENT_KEY))
                .and_then(serde_json::Value::as_str);
            if named == Some(replacement.id.as_str()) {
                return Ok(Some(version));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    use crate::sink::{DeltaSink, Numbering, PlanRows};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("ind", DataType::Int64, false)]))
    }

    fn rows(values: &[i64]) -> RecordBatch {
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    /// A replacement committed already (its answer lost, say) is seen in the table and not
    /// committed again, which would leave its rows removed.
    #[tokio::test]
    async fn a_replacement_is_committed_once() {
        let dir = tempfile::tempdir().unwrap();
        let uri = crate::sink::local_table_uri(dir.path(), "t");
        let mut sink = DeltaSink::open(&uri, "unused").await.unwrap();
        sink.ensure_exists(&schema()).await.unwrap();
        sink.load_newest().await.unwrap();
        let mut replacement = sink.replacement(&schema()).await.unwrap();
        replacement.write(&rows(&[1, 2, 3])).await.unwrap();
        let first = sink
            .replace(&mut replacement, Default::default())
            .await
            .unwrap();
        sink.load_newest().await.unwrap();
        let again = sink
            .replace(&mut replacement, Default::default())
            .await
            .unwrap();
        assert_eq!((first, again), (Some(1), Some(1)));
        assert_eq!(
            sink.load_newest().await.unwrap(),
            Some(1),
            "no second commit"
        );
        assert_eq!(sink.committed_as(&replacement).await.unwrap(), Some(1));
    }

    /// An engine's commit built on the version before a replacement (a rebuild) removed every
    /// file: delta-rs finds it read the removed files, and the sink commits it again on the
    /// replacement, with its rows once, instead of stopping the engine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_committed_while_replacements_commit_are_all_committed_once() {
        let dir = tempfile::tempdir().unwrap();
        let uri = crate::sink::local_table_uri(dir.path(), "t");
        const REPLACEMENTS: u32 = 3;
        let mut engine = DeltaSink::open(&uri, "unused").await.unwrap();
        let first = PlanRows {
            app_id: "kinesis-delta/p/s/a".into(),
            version: 1,
            rows: vec![rows(&[1])],
        };
        engine
            .commit_plans(
                &schema(),
                &[first],
                Numbering::Consecutive,
                Default::default(),
            )
            .await
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committing = {
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                let mut version = 1;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    version += 1;
                    let plan = PlanRows {
                        app_id: "kinesis-delta/p/s/a".into(),
                        version,
                        rows: vec![rows(&[version])],
                    };
                    engine
                        .commit_plans(
                            &schema(),
                            &[plan],
                            Numbering::Consecutive,
                            Default::default(),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("plan {version}: {e}"));
                    // Room for the replacements to win now and then.
                    tokio::time::sleep(std::time::Duration::from_millis(
                        version.unsigned_abs() % 4 * 20,
                    ))
                    .await;
                }
                version
            })
        };
        let mut rebuild = DeltaSink::open(&uri, "unused").await.unwrap();
        let mut replaced = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while replaced < REPLACEMENTS && !committing.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "{replaced} replacements won"
            );
            rebuild.load_newest().await.unwrap();
            let mut replacement = rebuild.replacement(&schema()).await.unwrap();
            replacement.write(&rows(&[-1])).await.unwrap();
            if rebuild
                .replace(&mut replacement, Default::default())
                .await
                .unwrap()
                .is_some()
            {
                replaced += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let plans = committing.await.unwrap();
        // Every plan committed (none stopped on a replacement), each row once.
        let id = "kinesis-delta/p/s/a".to_owned();
        let recorded = rebuild.recorded(std::slice::from_ref(&id)).await.unwrap();
        assert_eq!(recorded[&id], plans);
        let tables = crate::query::TableSet::open_tables(
            &[("t".to_owned(), uri.clone())],
            &[],
            &Default::default(),
        )
        .await
        .unwrap();
        let result = tables
            .sql("SELECT count(*) = count(DISTINCT ind) FROM t")
            .await
            .unwrap();
        let batch = &result.batches[0];
        let distinct = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>();
        assert!(distinct.unwrap().value(0), "no row twice");
    }
}
