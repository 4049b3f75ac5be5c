//! The engine's table maintenance, run by each stream between its own commits: compaction once a
//! table has gathered `compact_min_files` small files, vacuum every `vacuum_interval`, and a last
//! compaction when the engine stops. Checkpoints and expired-log clean-up come with the commits
//! themselves (delta-rs writes a checkpoint every `delta.checkpointInterval` versions, 100 by
//! default, and then deletes log files older than `delta.logRetentionDuration`, 30 days).
//!
//! Running between the stream's own commits, a compaction never races the stream's appends. A
//! compaction that fails (another writer's commit conflicted, the store was unreachable) is logged
//! and tried again later: maintenance is never fatal to ingest.

use std::time::{Duration, Instant};

use super::EngineError;
use crate::config::{ConfigError, MaintenanceSettings, Pipeline};
use crate::sink::{Compaction, DeltaSink, TableFiles};

/// How long the compaction at stop may take: a supervisor stopping the engine waits about 30 s
/// before it kills it (Kubernetes' default grace period), and committing the last batch comes
/// first.
const STOP_COMPACTION_LIMIT: Duration = Duration::from_secs(15);

/// One table's maintenance schedule.
#[derive(Debug)]
pub(super) struct Maintainer {
    settings: MaintenanceSettings,
    /// Small files the table holds at least, counted at the last look and one per commit since:
    /// the table is looked at again (a log read) only when this reaches the threshold.
    small_files: Option<usize>,
    vacuumed: Option<Instant>,
}

impl Maintainer {
    pub fn new(settings: &MaintenanceSettings) -> Self {
        Self {
            settings: settings.clone(),
            small_files: None,
            vacuumed: None,
        }
    }

    /// Runs what is due on `table` after this engine committed `files_added` files to it.
    pub async fn after_commit(&mut self, table: &mut DeltaSink, files_added: usize) {
        let min_files = self.settings.compact_min_files;
        if min_files > 0 {
            let estimate = self.small_files.map(|n| n + files_added);
            if estimate.is_none_or(|n| n >= min_files) {
                self.compact(table, min_files).await;
            } else {
                self.small_files = estimate;
            }
        }
        if self.settings.vacuum
            && self
                .vacuumed
                .is_none_or(|at| at.elapsed() >= self.settings.vacuum_interval)
        {
            self.vacuumed = Some(Instant::now());
            let vacuum = table.vacuum(self.settings.vacuum_retention).await;
            table.metrics().maintenance("vacuum", vacuum.is_ok());
            if let Err(e) = vacuum {
                tracing::warn!(table = %table.uri(), error = %e, "vacuum failed; it runs again after the next vacuum_interval");
            }
        }
    }

    /// Compacts the small files left when the engine stops, if there are at least a fifth of
    /// `compact_min_files` (10 by default): a table is left with a handful, and a run that wrote a
    /// few large batches is not made to rewrite them. Given up after [`STOP_COMPACTION_LIMIT`], so
    /// that a stop stays prompt (the files written so far are then unreferenced, and vacuum
    /// deletes them after the retention).
    pub async fn at_stop(&mut self, table: &mut DeltaSink) {
        let min_files = (self.settings.compact_min_files / 5).max(2);
        if self.settings.compact_min_files == 0 || self.small_files.is_none_or(|n| n < min_files) {
            return;
        }
        let uri = table.uri().to_owned();
        if tokio::time::timeout(STOP_COMPACTION_LIMIT, self.compact(table, min_files))
            .await
            .is_err()
        {
            tracing::warn!(table = %uri, "the compaction at stop took too long and was given up; the next run compacts");
        }
    }

    async fn compact(&mut self, table: &mut DeltaSink, min_files: usize) {
        let target = u64::try_from(self.settings.target_file_size).unwrap_or(u64::MAX);
        let started = Instant::now();
        let compaction = table.compact(target, min_files).await;
        // Counted again from the table as it is now; after a failure (another writer's compaction
        // won, the store failed), tried again once `min_files` more batches are committed.
        self.small_files = Some(match &compaction {
            Ok(_) => table.loaded_files(target).map_or(0, |f| {
                table.metrics().committed(f.version, f.files);
                f.small_files
            }),
            Err(_) => 0,
        });
        if !matches!(compaction, Ok(None)) {
            table.metrics().maintenance("compact", compaction.is_ok());
        }
        match compaction {
            Ok(Some(c)) => {
                // Readers then open the table from one checkpoint, not from the checkpoint before
                // the compaction and the compaction's long list of removed files.
                let checkpoint = table.checkpoint().await;
                table
                    .metrics()
                    .maintenance("checkpoint", checkpoint.is_ok());
                if let Err(e) = checkpoint {
                    tracing::warn!(table = %table.uri(), error = %e, "could not write a checkpoint after compacting");
                }
                tracing::info!(
                    table = %table.uri(),
                    files_removed = c.files_removed,
                    files_added = c.files_added,
                    ms = started.elapsed().as_millis() as u64,
                    "compacted small files"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(table = %table.uri(), error = %e, "compaction failed; it is tried again after more batches");
            }
        }
    }
}

/// One table as `kinesis-delta maintain` left it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableMaintenance {
    /// The table's name (its folder).
    pub table: String,
    /// Before: `None` when the table does not exist yet (nothing was done).
    pub before: Option<TableFiles>,
    /// After.
    pub after: Option<TableFiles>,
    /// The compaction, when there were small files to compact.
    pub compaction: Option<Compaction>,
    /// Log files older than the log retention that the new checkpoint made unnecessary.
    pub expired_logs: usize,
    /// Removed files deleted by vacuum (`None`: vacuum is off in the config).
    pub vacuumed: Option<usize>,
}

/// The pipeline's tables (and dead-letter tables) named `names`, or all of them when `names` is
/// empty, as `(name, url)`. An unknown name is an error that lists the known ones.
pub fn pipeline_tables(
    pipeline: &Pipeline,
    names: &[String],
) -> Result<Vec<(String, String)>, ConfigError> {
    let all = pipeline.tables();
    if let Some(unknown) = names.iter().find(|n| !all.iter().any(|(t, _)| t == *n)) {
        let known: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
        return Err(ConfigError::Invalid(format!(
            "no table `{unknown}` in the pipeline (its tables: {})",
            known.join(", ")
        )));
    }
    Ok(all
        .into_iter()
        .filter(|(t, _)| names.is_empty() || names.contains(t))
        .collect())
}

/// Runs maintenance once on one table: compaction of every small file (two or more), a checkpoint
/// with expired-log clean-up, and vacuum (when the config has it on).
pub async fn maintain_table(
    pipeline: &Pipeline,
    name: &str,
    uri: &str,
) -> Result<TableMaintenance, EngineError> {
    let settings = &pipeline.maintenance;
    let target = u64::try_from(settings.target_file_size).unwrap_or(u64::MAX);
    // The transaction id is not used: maintenance commits carry none.
    let mut table = DeltaSink::open_with(uri, "kinesis-delta/maintain", &pipeline.storage).await?;
    let mut report = TableMaintenance {
        table: name.to_owned(),
        before: table.files(target).await?,
        after: None,
        compaction: None,
        expired_logs: 0,
        vacuumed: None,
    };
    if report.before.is_none() {
        return Ok(report);
    }
    report.compaction = table.compact(target, 2).await?;
    report.expired_logs = table.checkpoint().await?;
    if settings.vacuum {
        report.vacuumed = Some(table.vacuum(settings.vacuum_retention).await?);
    }
    report.after = table.files(target).await?;
    Ok(report)
}
