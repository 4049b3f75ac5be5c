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
//! survive compaction and checkpoints, and the batch manifests (`_kinesis_delta/`) are outside what
//! vacuum deletes (it deletes only files the log removed).

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::checkpoints::{cleanup_metadata, create_checkpoint};
use serde::Serialize;

use super::delta::parquet_properties;
use super::{DeltaSink, SinkError};

/// How much of a table is in files, and how much of that in small ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableFiles {
    /// The table version.
    pub version: i64,
    /// Live data files.
    pub files: usize,
    /// Live data files smaller than the compaction target.
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

impl DeltaSink {
    /// The table's live files as of its newest version (`None` before the table exists).
    pub async fn files(&mut self, target_file_size: u64) -> Result<Option<TableFiles>, SinkError> {
        if !self.refresh().await? {
            return Ok(None);
        }
        Ok(Some(self.loaded_files(target_file_size)?))
    }

    /// The live files of the loaded snapshot.
    fn loaded_files(&self, target_file_size: u64) -> Result<TableFiles, SinkError> {
        let snapshot = self.table.snapshot().map_err(|source| self.error(source))?;
        let mut files = TableFiles {
            version: self.version().unwrap_or(0),
            ..TableFiles::default()
        };
        for file in snapshot.log_data().iter() {
            let size = u64::try_from(file.size()).unwrap_or(0);
            files.files += 1;
            files.bytes += size;
            if size < target_file_size {
                files.small_files += 1;
            }
        }
        Ok(files)
    }

    /// Rewrites the table's files smaller than `target_file_size` into files near that size, in
    /// one commit, when there are at least `min_files` of them (and at least two). `None` when
    /// there were too few.
    pub async fn compact(
        &mut self,
        target_file_size: u64,
        min_files: usize,
    ) -> Result<Option<Compaction>, SinkError> {
        let Some(files) = self.files(target_file_size).await? else {
            return Ok(None);
        };
        if files.small_files < min_files.max(2) {
            return Ok(None);
        }
        let target = NonZeroU64::new(target_file_size).unwrap_or(NonZeroU64::MIN);
        let (table, metrics) = self
            .table
            .clone()
            .optimize()
            .with_target_size(target)
            .with_writer_properties(parquet_properties())
            .await
            .map_err(|source| self.error(source))?;
        self.table = table;
        Ok(Some(Compaction {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
        }))
    }

    /// Deletes the data files the log removed more than `retention` ago. Returns how many.
    pub async fn vacuum(&mut self, retention: Duration) -> Result<usize, SinkError> {
        if self.files(u64::MAX).await?.is_none() {
            return Ok(0);
        }
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let (table, metrics) = self
            .table
            .clone()
            .vacuum()
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
        if self.files(u64::MAX).await?.is_none() {
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
