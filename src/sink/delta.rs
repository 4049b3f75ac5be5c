//! One Delta table written by one stream: created on the first batch, then one commit per batch
//! carrying `txn(app_id, batch_id)`; a batch whose id is already recorded is never committed again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, FinalizedCommit};
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
use deltalake::kernel::{Action, MetadataExt, StructType, Transaction};
use deltalake::logstore::ObjectStoreRef;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;

use super::SinkError;
use super::evolve::{TypeChange, target_schema};
use super::schema::{conform, delta_compatible};
use crate::config::table_folder;
use crate::source::Backoff;
use crate::telemetry::TableMetrics;

/// How many times a commit is tried again after delta-rs gave up over other writers' commits
/// (each time after its own 15 retries): with a pause growing to 2 s, about 35 s of pauses
/// before the commit fails.
const MAX_COMMIT_ROUNDS: u32 = 30;

/// The rounds of a commit that delta-rs gave up over other writers' commits (after its own
/// retries), each followed by a growing, jittered pause.
#[derive(Debug)]
pub(super) struct ContendedRounds {
    backoff: Backoff,
    rounds: u32,
    /// delta-rs's retries in the rounds it gave up.
    pub retries: u64,
}

impl Default for ContendedRounds {
    fn default() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(20), Duration::from_secs(2)),
            rounds: 0,
            retries: 0,
        }
    }
}

impl ContendedRounds {
    /// After delta-rs gave up after `attempts` retries: pauses and says `true` (commit again), or
    /// `false` once [`MAX_COMMIT_ROUNDS`] are spent (the commit fails).
    pub async fn pause(&mut self, attempts: i32) -> bool {
        if self.rounds >= MAX_COMMIT_ROUNDS {
            return false;
        }
        self.rounds += 1;
        self.retries += u64::try_from(attempts).unwrap_or(0);
        tracing::debug!(
            rounds = self.rounds,
            "other writers committed first through every retry; trying again"
        );
        let pause = self.backoff.next_delay(&mut rand::rng());
        tokio::time::sleep(pause).await;
        true
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The batch is now in the table.
    Committed {
        /// The new table version.
        version: i64,
        /// Time spent writing Parquet files.
        write: Duration,
        /// Time spent committing to the log.
        commit: Duration,
        /// Times delta-rs committed again over another writer's commit of the same version.
        retries: u64,
    },
    /// The table already holds this batch (a replay, or a competing engine won).
    AlreadyCommitted,
}

/// A Delta table and the transaction id under which one stream writes to it.
pub struct DeltaSink {
    pub(super) uri: String,
    app_id: String,
    pub(super) table: DeltaTable,
    pub(super) schema: Option<SchemaRef>,
    properties: Vec<(String, String)>,
    /// The object-store options it was opened with.
    pub(super) storage: std::collections::HashMap<String, String>,
    metrics: TableMetrics,
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink")
            .field("uri", &self.uri)
            .field("app_id", &self.app_id)
            .finish()
    }
}

impl DeltaSink {
    /// Opens the table at `uri` (it need not exist yet).
    pub async fn open(uri: &str, app_id: &str) -> Result<Self, SinkError> {
        Self::open_with(uri, app_id, &std::collections::BTreeMap::new()).await
    }

    /// Opens the table at `uri` with object-store options (`AWS_ENDPOINT_URL`, …).
    pub async fn open_with(
        uri: &str,
        app_id: &str,
        storage: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, SinkError> {
        let err = |source| SinkError::Delta {
            table: uri.to_owned(),
            source,
        };
        let url = url::Url::parse(uri).map_err(|e| {
            err(deltalake::DeltaTableError::InvalidTableLocation(
                e.to_string(),
            ))
        })?;
        let options: std::collections::HashMap<String, String> = storage
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let metrics = TableMetrics::new(table_folder(uri));
        let mut table = DeltaTableBuilder::from_url(url)
            .map_err(err)?
            .with_storage_options(options.clone())
            .build()
            .map_err(err)?;
        let schema = if table.verify_deltatable_existence().await.map_err(err)? {
            table.load().await.map_err(err)?;
            let version = table
                .version()
                .and_then(|v| i64::try_from(v).ok())
                .unwrap_or(-1);
            let files = table.snapshot().map_or(0, |s| s.log_data().num_files());
            metrics.committed(version, files);
            Some(table_arrow_schema(&table).map_err(err)?)
        } else {
            metrics.committed(-1, 0);
            None
        };
        Ok(Self {
            uri: uri.to_owned(),
            app_id: app_id.to_owned(),
            table,
            schema,
            properties: Vec::new(),
            storage: options,
            metrics,
        })
    }

    /// Sets a Delta table property (`delta.…`) used when this sink creates the table.
    #[must_use]
    pub fn with_table_property(mut self, key: &str, value: &str) -> Self {
        self.set_table_property(key, value);
        self
    }

    /// Sets a table property (`delta.…`, or the engine's own) used when this sink creates the
    /// table.
    pub fn set_table_property(&mut self, key: &str, value: &str) {
        self.properties.retain(|(k, _)| k != key);
        self.properties.push((key.to_owned(), value.to_owned()));
    }

    /// Sets a property of the existing table, in a commit of its own.
    pub async fn commit_table_property(&mut self, key: &str, value: &str) -> Result<(), SinkError> {
        self.refresh().await?;
        let snapshot = self.table.snapshot().map_err(|source| self.error(source))?;
        let metadata = snapshot
            .metadata()
            .clone()
            .add_config_key(key.to_owned(), value.to_owned())
            .map_err(|e| self.error(e.into()))?;
        let operation = DeltaOperation::SetTableProperties {
            properties: [(key.to_owned(), value.to_owned())].into_iter().collect(),
        };
        CommitBuilder::default()
            .with_actions(vec![Action::Metadata(metadata)])
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(|source| self.error(source))?;
        self.table
            .update_state()
            .await
            .map_err(|source| self.error(source))
    }

    /// Whether the table existed when last loaded.
    pub fn exists(&self) -> bool {
        self.schema.is_some()
    }

    /// A property of the loaded table (`None`: not set, or no table yet).
    pub fn table_property(&self, key: &str) -> Option<String> {
        let snapshot = self.table.snapshot().ok()?;
        snapshot.metadata().configuration().get(key).cloned()
    }

    /// The table's URL.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The table's metrics.
    pub fn metrics(&self) -> &TableMetrics {
        &self.metrics
    }

    /// The object store rooted at the table's folder.
    pub fn object_store(&self) -> ObjectStoreRef {
        self.table.log_store().object_store(None)
    }

    /// The table's current version, once it exists.
    pub fn version(&self) -> Option<i64> {
        self.table.version().and_then(|v| i64::try_from(v).ok())
    }

    /// Loads the table's newest version. `false` when the table does not exist yet.
    pub(super) async fn refresh(&mut self) -> Result<bool, SinkError> {
        if self.schema.is_none()
            && !self
                .table
                .verify_deltatable_existence()
                .await
                .map_err(|source| self.error(source))?
        {
            return Ok(false);
        }
        self.table
            .update_state()
            .await
            .map_err(|source| self.error(source))?;
        if self.schema.is_none() {
            let schema = table_arrow_schema(&self.table).map_err(|source| self.error(source))?;
            self.schema = Some(schema);
        }
        Ok(true)
    }

    /// Loads the table's newest version: which it is, `None` when there is no table yet.
    pub async fn load_newest(&mut self) -> Result<Option<i64>, SinkError> {
        Ok(if self.refresh().await? {
            self.version()
        } else {
            None
        })
    }

    /// Creates the table from `schema` when there is none yet.
    pub async fn ensure_exists(&mut self, schema: &SchemaRef) -> Result<(), SinkError> {
        self.ensure_table(schema).await.map(|_| ())
    }

    /// A delta-rs failure on this table.
    pub(super) fn error(&self, source: deltalake::DeltaTableError) -> SinkError {
        SinkError::Delta {
            table: self.uri.clone(),
            source,
        }
    }

    /// The newest batch id committed under this sink's transaction id (`None`: none yet).
    pub async fn committed_batch(&mut self) -> Result<Option<i64>, SinkError> {
        if !self.refresh().await? {
            return Ok(None);
        }
        self.snapshot_batch().await
    }

    /// The batch id recorded under this sink's transaction id in the loaded snapshot, without
    /// reloading it.
    async fn snapshot_batch(&self) -> Result<Option<i64>, SinkError> {
        self.snapshot_txn(&self.app_id).await
    }

    /// Checks that rows of `schema` can go into the table (when it exists): new columns are
    /// added as they come, dropped ones stay; a changed type cannot be stored (see `evolve`).
    pub fn check_schema(&self, schema: &SchemaRef) -> Result<(), SinkError> {
        let none = Arc::new(arrow::datatypes::Schema::empty());
        target_schema(
            self.schema.as_ref().unwrap_or(&none),
            &delta_compatible(schema),
        )
        .map(|_| ())
        .map_err(|changed| self.type_changed(&changed))
    }

    /// The schema rows of `schema` are written with now, from the table's schema in the loaded
    /// snapshot (another writer may have added columns), and whether the commit adds columns.
    pub(super) fn write_schema(
        &mut self,
        schema: &SchemaRef,
    ) -> Result<(SchemaRef, bool), SinkError> {
        let current = table_arrow_schema(&self.table).map_err(|source| self.error(source))?;
        self.schema = Some(Arc::clone(&current));
        let target = target_schema(&current, &delta_compatible(schema))
            .map_err(|changed| self.type_changed(&changed))?;
        let adds_columns = target.fields().len() > current.fields().len();
        Ok((target, adds_columns))
    }

    fn type_changed(&self, changed: &[TypeChange]) -> SinkError {
        let columns: Vec<String> = changed
            .iter()
            .map(|c| {
                format!(
                    "`{}` is {} in the table, {} in the SQL",
                    c.column, c.table, c.sql
                )
            })
            .collect();
        SinkError::SchemaTypeChanged {
            table: self.uri.clone(),
            columns: columns.join("; "),
        }
    }

    /// Commits one batch's rows with `txn(app_id, batch_id)`, creating the table from `schema` if
    /// needed. Never commits a batch id the table already records.
    pub async fn commit(
        &mut self,
        batch_id: i64,
        schema: &SchemaRef,
        rows: &[RecordBatch],
        info: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CommitOutcome, SinkError> {
        self.ensure_table(schema).await?;
        let uri = self.uri.clone();
        let err = |source| SinkError::Delta {
            table: uri.clone(),
            source,
        };
        // The check runs on the very snapshot the commit is built on: a commit of the same `txn`
        // after this snapshot fails delta-rs's conflict check, and one before it is seen here.
        if self.reload_holds(batch_id).await? {
            self.metrics.already_committed();
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        let mut write = Duration::ZERO;
        let started = Instant::now();
        let mut contended = ContendedRounds::default();
        let result = loop {
            // Written against the snapshot the commit is built on, every round: another writer
            // may have added columns meanwhile.
            let (target, adds_columns) = self.write_schema(schema)?;
            let writing = Instant::now();
            let adds = self.write_files(&target, adds_columns, rows.iter()).await?;
            write += writing.elapsed();
            let txn = Transaction::new(&self.app_id, batch_id);
            let new_schema = adds_columns.then_some(&target);
            match self.append(vec![txn], &adds, &info, new_schema).await {
                // Other writers (other pipelines, engines sharing the table) kept committing first
                // through delta-rs's 15 retries, or changed the schema: pause, reload and go
                // again. The batch's own `txn` is checked on the new snapshot, as before the first
                // attempt.
                Err(DeltaTableError::Transaction {
                    source: TransactionError::MaxCommitAttempts(attempts),
                }) if contended.pause(attempts).await => {
                    if self.reload_holds(batch_id).await? {
                        self.metrics.commit_retried(contended.retries);
                        self.metrics.already_committed();
                        return Ok(CommitOutcome::AlreadyCommitted);
                    }
                }
                Err(e) if built_on_a_stale_version(&e) => {
                    if self.reload_holds(batch_id).await? {
                        self.metrics.already_committed();
                        return Ok(CommitOutcome::AlreadyCommitted);
                    }
                }
                other => break other,
            }
        };
        match result {
            Ok(finalized) => {
                // The snapshot is brought up to date before the next use (`committed_batch`,
                // or the next commit's check): not here, on the path of every batch.
                let version = i64::try_from(finalized.version()).unwrap_or(i64::MAX);
                let retries = finalized.metrics.num_retries + contended.retries;
                self.metrics.commit_retried(retries);
                self.metrics
                    .committed(version, finalized.snapshot.log_data().num_files());
                Ok(CommitOutcome::Committed {
                    version,
                    write,
                    commit: started.elapsed().saturating_sub(write),
                    retries,
                })
            }
            Err(e) => {
                // A competing engine may have committed this batch id (a txn conflict): if so the
                // batch is in the table once, which is all that matters. Otherwise it is a failure.
                if self
                    .committed_batch()
                    .await?
                    .is_some_and(|done| done >= batch_id)
                {
                    tracing::info!(table = %self.uri, batch_id, "batch already committed by another writer");
                    self.metrics.already_committed();
                    Ok(CommitOutcome::AlreadyCommitted)
                } else {
                    Err(err(e))
                }
            }
        }
    }

    /// Commits `adds` under `txns`, built on the loaded snapshot; with `new_schema`, the table's
    /// schema becomes it in the same commit (columns added by the SQL).
    pub(super) async fn append(
        &self,
        txns: Vec<Transaction>,
        adds: &[deltalake::kernel::Add],
        info: &serde_json::Map<String, serde_json::Value>,
        new_schema: Option<&SchemaRef>,
    ) -> Result<FinalizedCommit, DeltaTableError> {
        let properties = CommitProperties::default()
            .with_application_transactions(txns)
            .with_metadata(info.clone());
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        let mut actions: Vec<Action> = Vec::with_capacity(adds.len() + 1);
        if let Some(schema) = new_schema {
            actions.push(self.schema_change(schema)?);
        }
        actions.extend(adds.iter().cloned().map(Action::Add));
        CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                Some(self.table.snapshot()?),
                self.table.log_store(),
                operation,
            )
            .await
    }

    /// The `metaData` action that makes `schema` the loaded table's schema.
    pub(super) fn schema_change(&self, schema: &SchemaRef) -> Result<Action, DeltaTableError> {
        let kernel: StructType = schema.as_ref().try_into_kernel()?;
        let metadata = self
            .table
            .snapshot()?
            .metadata()
            .clone()
            .with_schema(&kernel)?;
        Ok(Action::Metadata(metadata))
    }

    /// Loads the table's newest version: `true` when it records `batch_id` under this sink's id.
    async fn reload_holds(&mut self, batch_id: i64) -> Result<bool, SinkError> {
        self.table
            .update_state()
            .await
            .map_err(|source| self.error(source))?;
        Ok(self
            .snapshot_batch()
            .await?
            .is_some_and(|done| done >= batch_id))
    }

    /// Writes `rows` into Parquet files of `schema` (the table's, or with `adds_columns` the
    /// table's and the SQL's new columns), not yet committed: their `add` actions.
    pub(super) async fn write_files(
        &self,
        schema: &SchemaRef,
        adds_columns: bool,
        rows: impl Iterator<Item = &RecordBatch>,
    ) -> Result<Vec<deltalake::kernel::Add>, SinkError> {
        let mut writer = RecordBatchWriter::for_table(&self.table)
            .map_err(|source| self.error(source))?
            .with_writer_properties(parquet_properties());
        let mode = if adds_columns {
            WriteMode::MergeSchema
        } else {
            WriteMode::Default
        };
        for batch in rows.filter(|b| b.num_rows() > 0) {
            self.write_conformed(&mut writer, batch, schema, mode)
                .await?;
        }
        writer.flush().await.map_err(|source| self.error(source))
    }

    /// Writes `batch` with `writer`, its columns converted to `schema`'s types (and NULL in the
    /// columns it lacks).
    pub(super) async fn write_conformed(
        &self,
        writer: &mut RecordBatchWriter,
        batch: &RecordBatch,
        schema: &SchemaRef,
        mode: WriteMode,
    ) -> Result<(), SinkError> {
        let batch = conform(batch, schema).map_err(|source| SinkError::Arrow {
            table: self.uri.clone(),
            source,
        })?;
        writer
            .write_with_mode(batch, mode)
            .await
            .map_err(|source| self.error(source))
    }

    /// The version recorded under transaction id `app_id` in the loaded snapshot.
    pub(super) async fn snapshot_txn(&self, app_id: &str) -> Result<Option<i64>, SinkError> {
        let log_store = self.table.log_store();
        let snapshot = self.table.snapshot().map_err(|source| self.error(source))?;
        snapshot
            .transaction_version(log_store.as_ref(), app_id)
            .await
            .map_err(|source| self.error(source))
    }

    pub(super) async fn ensure_table(
        &mut self,
        schema: &SchemaRef,
    ) -> Result<SchemaRef, SinkError> {
        if let Some(existing) = &self.schema {
            return Ok(existing.clone());
        }
        let err = |source| SinkError::Delta {
            table: self.uri.clone(),
            source,
        };
        let wanted = delta_compatible(schema);
        let kernel: StructType = wanted
            .as_ref()
            .try_into_kernel()
            .map_err(|e| err(e.into()))?;
        let created = self
            .table
            .create()
            .with_columns(kernel.fields().cloned())
            .with_configuration(
                self.properties
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone()))),
            )
            // The engine's own properties (`kinesisDelta.…`) are not Delta's.
            .with_raise_if_key_not_exists(false)
            .with_save_mode(SaveMode::Ignore)
            // Version 0 only: a retry after losing the race to create it would append a second
            // protocol and metadata to the other engine's table.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match created {
            Ok(table) => {
                self.table = table;
                tracing::info!(table = %self.uri, "created Delta table");
            }
            // Another engine created it at the same moment: use theirs.
            Err(e) => {
                tracing::info!(table = %self.uri, reason = %e, "the table was created by another engine");
            }
        }
        self.table.load().await.map_err(err)?;
        let actual = table_arrow_schema(&self.table).map_err(err)?;
        self.schema = Some(actual.clone());
        self.check_schema(schema)?;
        Ok(actual)
    }
}

/// Whether a commit failed because the version it was built on is stale in a way that needs its
/// rows written again against the newest: another writer changed the schema (added columns), or a
/// rebuild replaced every file (delta-rs counts a commit without a predicate as having read them
/// all). The caller loads the table, checks its `txn`s again and writes again.
pub(super) fn built_on_a_stale_version(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(
                CommitConflictError::MetadataChanged | CommitConflictError::ConcurrentDeleteRead
            ),
        }
    )
}

pub(super) fn table_arrow_schema(
    table: &DeltaTable,
) -> Result<SchemaRef, deltalake::DeltaTableError> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
    let schema = table.snapshot()?.schema();
    let arrow: arrow::datatypes::Schema = schema.as_ref().try_into_arrow()?;
    Ok(std::sync::Arc::new(arrow))
}

/// How batches are written to Parquet: Snappy, as delta-rs does, with dictionaries given up once
/// they pass 256 KiB rather than 1 MiB. A column of mostly distinct values (ids, titles, URLs) then
/// stops paying for a dictionary early; one of few distinct values keeps it.
pub(super) fn parquet_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_page_size_limit(256 * 1024)
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows(values: &[i64]) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![Field::new("ind", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap();
        (schema, batch)
    }

    #[tokio::test]
    async fn a_batch_id_is_committed_once() {
        let dir = tempfile::tempdir().unwrap();
        let uri = &crate::sink::local_table_uri(dir.path(), "t");
        let mut sink = DeltaSink::open(uri, "app").await.unwrap();
        assert_eq!(sink.committed_batch().await.unwrap(), None);
        let (schema, batch) = rows(&[1, 2, 3]);
        let first = sink
            .commit(1, &schema, std::slice::from_ref(&batch), Default::default())
            .await
            .unwrap();
        assert!(
            matches!(first, CommitOutcome::Committed { .. }),
            "{first:?}"
        );
        let again = sink
            .commit(1, &schema, &[batch], Default::default())
            .await
            .unwrap();
        assert_eq!(again, CommitOutcome::AlreadyCommitted);

        let mut reopened = DeltaSink::open(uri, "app").await.unwrap();
        assert_eq!(reopened.committed_batch().await.unwrap(), Some(1));
        let mut other_app = DeltaSink::open(uri, "other").await.unwrap();
        assert_eq!(other_app.committed_batch().await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sinks_racing_to_create_a_table_commit_the_batch_once() {
        let (schema, batch) = rows(&[1, 2, 3]);
        for round in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let uri = &crate::sink::local_table_uri(dir.path(), "t");
            let mut a = DeltaSink::open(uri, "app").await.unwrap();
            let mut b = DeltaSink::open(uri, "app").await.unwrap();
            let (ra, rb) = tokio::join!(
                a.commit(1, &schema, std::slice::from_ref(&batch), Default::default()),
                b.commit(1, &schema, std::slice::from_ref(&batch), Default::default()),
            );
            let committed = [ra, rb]
                .into_iter()
                .filter(|r| matches!(r, Ok(CommitOutcome::Committed { .. })))
                .count();
            let mut table = deltalake::open_table(url::Url::parse(uri).unwrap())
                .await
                .unwrap();
            table.load().await.unwrap();
            let files = table.snapshot().unwrap().log_data().num_files();
            assert_eq!(
                (committed, files),
                (1, 1),
                "round {round}: batch 1 committed once"
            );
            // Version 0 creates the table, version 1 holds the batch: no second create mid-log.
            assert_eq!(table.version(), Some(1), "round {round}");
        }
    }

    /// Several writers (other pipelines, or engines sharing shards) appending to one table at once:
    /// delta-rs gives up after 15 retries over their commits (`MaxCommitAttempts`); the sink tries
    /// again instead of failing the engine, and each batch is committed once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_writers_appending_at_once_all_commit_every_batch() {
        const WRITERS: i64 = 8;
        const BATCHES: i64 = 15;
        let dir = tempfile::tempdir().unwrap();
        let uri = crate::sink::local_table_uri(dir.path(), "t");
        let (schema, first) = rows(&[-1]);
        DeltaSink::open(&uri, "setup")
            .await
            .unwrap()
            .commit(1, &schema, &[first], Default::default())
            .await
            .unwrap();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (uri, schema) = (uri.clone(), Arc::clone(&schema));
                tokio::spawn(async move {
                    let mut sink = DeltaSink::open(&uri, &format!("writer-{w}")).await.unwrap();
                    for batch in 1..=BATCHES {
                        let (_, rows) = rows(&[w * 1000 + batch]);
                        let outcome = sink
                            .commit(batch, &schema, &[rows], Default::default())
                            .await;
                        assert!(
                            matches!(outcome, Ok(CommitOutcome::Committed { .. })),
                            "writer {w}, batch {batch}: {outcome:?}"
                        );
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let mut table = deltalake::open_table(url::Url::parse(&uri).unwrap())
            .await
            .unwrap();
        table.load().await.unwrap();
        let files = table.snapshot().unwrap().log_data().num_files();
        assert_eq!(files as i64, WRITERS * BATCHES + 1);
    }
}
