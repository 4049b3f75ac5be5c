//! Table maintenance: compaction of small files, log checkpoints and expired-log clean-up, and
//! vacuum of the files compaction removed.
//!
//! Every micro-batch adds a file, so a table written all day gathers thousands of small ones and
//! queries slow down. Compaction rewrites the small files into files near a target size, in one
//! commit that changes no data (`dataChange = false`); readers of older versions keep their files
//! until vacuum deletes them, after the retention. The engine runs these between its own commits
//! ([`crate::pipeline`]); `kinesis-delta maintain` runs them once.
//!
//! None of it touches what the exactly-once protocol relies on: the `txn` ids live in the log and
//! survive compaction and checkpoints, and vacuum never deletes under a folder whose name starts
//! with `_`, where the batch manifests (`_kinesis_delta/`) and the log are.

use std::time::Duration;

use deltalake::checkpoints::{cleanup_metadata, create_checkpoint};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use object_store::ObjectStoreExt;
use serde::Serialize;

use super::delta::{parquet_properties, table_arrow_schema};
use super::{DeltaSink, SinkError};

/// The transaction id of compaction commits (see [`DeltaSink::compact`]).
pub const COMPACTION_APP_ID: &str = "kinesis-delta/compaction";

/// How much of a table is in files, and how much of that in small ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableFiles {
    /// The table version.
    pub version: i64,
    /// Live data files.
    pub files: usize,
    /// Live data files compaction would rewrite (smaller than half the target).
    pub small_files: usize,
    /// Bytes in live data files.
    pub bytes: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Compaction {
    /// Small files rewritten (removed from the table).
    pub files_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
}

/// A file compaction rewrites: below half the target (a file nearer the target is left alone, so
/// compacted files are not rewritten again and again).
fn is_small(size: i64, target_file_size: u64) -> bool {
    u64::try_from(size).unwrap_or(0) < target_file_size / 2
}

impl DeltaSink {
    /// The table's live files as of its newest version (`None` before the table exists).
    pub async fn files(&mut self, target_file_size: u64) -> Result<Option<TableFiles>, SinkError> {
        if !self.refresh().await? {
            return Ok(None);
        }
        Ok(Some(self.loaded_files(target_file_size)?))
    }

    /// The live files of the version last loaded (by [`Self::files`] or [`Self::compact`]).
    pub fn loaded_files(&self, target_file_size: u64) -> Result<TableFiles, SinkError> {
        let snapshot = self.table.snapshot().map_err(|source| self.error(source))?;
        let mut files = TableFiles {
            version: self.version().unwrap_or(0),
            ..TableFiles::default()
        };
        for file in snapshot.log_data().iter() {
            let size = u64::try_from(file.size()).unwrap_or(0);
            files.files += 1;
            files.bytes += size;
            if is_small(file.size(), target_file_size) {
                files.small_files += 1;
            }
        }
        Ok(files)
    }

    /// Rewrites the table's small files (below half of `target_file_size`) into files of about
    /// that size, oldest first, in one commit, when there are at least `min_files` of them (and at
    /// least two). `None` when there were too few. Either way the table is then loaded at its
    /// newest version.
    ///
    /// The commit carries the transaction id [`COMPACTION_APP_ID`], so two compactions of one
    /// table at once conflict and the second fails: delta-rs does not check that two commits
    /// removed the same files without changing data, and both compactions would add the same
    /// rows. (Its own `optimize` commits without a transaction id, so it is not used.)
    pub async fn compact(
        &mut self,
        target_file_size: u64,
        min_files: usize,
    ) -> Result<Option<Compaction>, SinkError> {
        if !self.refresh().await? {
            return Ok(None);
        }
        let snapshot = self.table.snapshot().map_err(|source| self.error(source))?;
        let mut small: Vec<_> = snapshot
            .log_data()
            .iter()
            // A file with deletion vectors (rows deleted by another tool) is left alone: it is
            // read here whole, and its deleted rows would come back.
            .filter(|f| is_small(f.size(), target_file_size))
            .filter(|f| f.deletion_vector_descriptor().is_none())
            .collect();
        if small.len() < min_files.max(2) {
            return Ok(None);
        }
        small.sort_by_key(|f| f.modification_time());
        let version = i64::try_from(snapshot.version()).unwrap_or(i64::MAX);
        // The loaded version's schema: a column added since the sink last wrote is in it.
        let schema = table_arrow_schema(&self.table).map_err(|source| self.error(source))?;
        let store = self.table.log_store().object_store(None);
        let mut writer = RecordBatchWriter::for_table(&self.table)
            .map_err(|source| self.error(source))?
            .with_writer_properties(parquet_properties());
        let mut adds = Vec::new();
        let mut bin_bytes = 0;
        for file in &small {
            // A small file, read whole (each is below half the target size).
            let bytes = store
                .get(&file.object_store_path())
                .await
                .map_err(|e| self.error(e.into()))?
                .bytes()
                .await
                .map_err(|e| self.error(e.into()))?;
            let batches = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| self.error(e.into()))?
                .build()
                .map_err(|e| self.error(e.into()))?;
            for batch in batches {
                let batch = batch.map_err(|e| self.error(e.into()))?;
                self.write_conformed(&mut writer, &batch, &schema, WriteMode::Default)
                    .await?;
            }
            bin_bytes += u64::try_from(file.size()).unwrap_or(0);
            if bin_bytes >= target_file_size {
                adds.extend(writer.flush().await.map_err(|source| self.error(source))?);
                bin_bytes = 0;
            }
        }
        adds.extend(writer.flush().await.map_err(|source| self.error(source))?);
        let compaction = Compaction {
            files_removed: small.len() as u64,
            files_added: adds.len() as u64,
        };
        let actions = small
            .iter()
            .map(|f| Action::Remove(f.remove_action(false)))
            .chain(adds.into_iter().map(|add| {
                Action::Add(Add {
                    data_change: false,
                    ..add
                })
            }))
            .collect();
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(COMPACTION_APP_ID, version));
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: i64::try_from(target_file_size).unwrap_or(i64::MAX),
        };
        CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(|source| self.error(source))?;
        self.refresh().await?;
        Ok(Some(compaction))
    }

    /// Deletes the data files the log removed more than `retention` ago, and files no version
    /// refers to that are older than `retention` (left by a crash). Returns how many.
    pub async fn vacuum(&mut self, retention: Duration) -> Result<usize, SinkError> {
        if !self.refresh().await? {
            return Ok(0);
        }
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let (table, metrics) = self
            .table
            .clone()
            .vacuum()
            // Full: files whose removal a checkpoint has forgotten (after the table's 7-day
            // `deletedFileRetentionDuration`) and files a crash left unreferenced are found by
            // listing; the retention protects every file a version younger than it reads.
            .with_mode(VacuumMode::Full)
            .with_retention_period(retention)
            .await
            .map_err(|source| self.error(source))?;
        self.table = table;
        Ok(metrics.files_deleted.len())
    }

    /// Writes a checkpoint of the newest version and deletes log files older than the table's
    /// log retention (`delta.logRetentionDuration`, 30 days by default) that the checkpoint
    /// makes unnecessary. Returns how many log files were deleted.
    pub async fn checkpoint(&mut self) -> Result<usize, SinkError> {
        if !self.refresh().await? {
            return Ok(0);
        }
        create_checkpoint(&self.table, None)
            .await
            .map_err(|source| self.error(source))?;
        cleanup_metadata(&self.table, None)
            .await
            .map_err(|source| self.error(source))
    }
}
