//! One stream's micro-batch loop: plan (or replay) a batch, decode, clean, commit, repeat.

mod pending;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use chrono::Utc;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::EngineError;
use super::maintenance::Maintainer;
use super::resume::{Checkpoint, resume, stream_facts};
use super::split::SplitRule;
use crate::config::{InitialPosition, LostStreamPolicy, Pipeline, StreamSpec};
use crate::decode::{
    DecodedBatch, METADATA_COLUMNS, RecordDecoder, dead_letter_batch, dead_letter_schema,
    raw_schema_from_sql,
};
use crate::progress::BatchProgress;
use crate::sink::{
    BatchManifest, CommitOutcome, DeltaSink, ManifestLog, ManifestOutcome, TipMarker,
};
use crate::source::{
    BatchLimits, BudgetLease, KinesisClient, KinesisRecord, MemoryBudget, StartPosition,
    StreamSource,
};
use crate::telemetry::{StreamMetrics, readiness};
use crate::transform::Cleaning;

/// How long the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Until cancelled.
    Continuous,
    /// Until every shard is read to its current end (like Spark's `Trigger.AvailableNow`).
    AvailableNow,
}

/// What one stream did in a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamSummary {
    /// The stream's short name.
    pub stream: String,
    /// Batches committed.
    pub batches: u64,
    /// Records read and committed (rows plus dead letters).
    pub records: u64,
    /// Dead letters among them.
    pub dead_letters: u64,
    /// The last committed batch id.
    pub last_batch_id: i64,
}

/// A batch ready to commit: its plan, its records and how they decoded.
struct PlannedBatch {
    manifest: BatchManifest,
    decoded: DecodedBatch,
    /// Bytes of record data.
    bytes: usize,
    fetch: Duration,
    decode: Duration,
    millis_behind: i64,
    replayed: bool,
    /// Some of the batch's records are gone and the user accepted it: it holds what remains.
    records_gone: bool,
    /// The batch's share of the memory budget, given back once it is committed.
    lease: BudgetLease,
}

/// One stream: its source, its cleaning and its two tables.
#[derive(Debug)]
pub struct StreamJob {
    name: String,
    source: StreamSource,
    decoder: RecordDecoder,
    split_rule: SplitRule,
    cleaning: Cleaning,
    output_schema: SchemaRef,
    table: DeltaSink,
    dead_letters: DeltaSink,
    table_maintenance: Maintainer,
    dead_letter_maintenance: Maintainer,
    manifests: ManifestLog,
    limits: BatchLimits,
    committed: i64,
    /// When the stream was created, recorded in every manifest.
    stream_created_ms: Option<i64>,
    /// The last collect found every shard at its end.
    caught_up: bool,
    on_lost_stream: LostStreamPolicy,
    /// Shards resuming found to be of another incarnation (and was told to read anew).
    foreign: BTreeSet<String>,
    /// The committed batch last recorded in a tip marker, and when.
    tip_marked: Option<(i64, Instant)>,
    progress: UnboundedSender<BatchProgress>,
    metrics: StreamMetrics,
    summary: StreamSummary,
}

impl StreamJob {
    /// Validates the stream's schema and SQL, opens its tables and resumes from the committed
    /// checkpoint.
    pub async fn start(
        pipeline: &Pipeline,
        spec: &StreamSpec,
        mode: RunMode,
        client: KinesisClient,
        budget: MemoryBudget,
        progress: UnboundedSender<BatchProgress>,
        cancel: &CancellationToken,
    ) -> Result<Self, EngineError> {
        let raw_schema = raw_schema_from_sql(&spec.schema_sql, &spec.schema_path).await?;
        let decoder = RecordDecoder::new(&spec.stream, raw_schema);
        let cleaning = Cleaning::new(&spec.sql, &spec.sql_path, decoder.row_schema()).await?;
        let output_schema = cleaning.output_schema();
        let app_id = spec.app_id(&pipeline.name);
        let mut table = DeltaSink::open_with(&spec.table_uri, &app_id, &pipeline.storage).await?;
        table.check_schema(&output_schema)?;
        // No min/max statistics for the raw bytes: they serve no query and bloat the log.
        let dead_letters = DeltaSink::open_with(&spec.dead_letter_uri, &app_id, &pipeline.storage)
            .await?
            .with_table_property(
                "delta.dataSkippingStatsColumns",
                &METADATA_COLUMNS.join(","),
            );
        let manifests = ManifestLog::new(table.object_store(), &pipeline.name, &spec.stream);

        let started_at = Utc::now();
        let initial = match pipeline.kinesis.initial_position {
            InitialPosition::TrimHorizon => StartPosition::TrimHorizon,
            // LATEST is pinned once to the moment the pipeline first started: an iterator renewed
            // after an outage, a restart or a second engine must not skip records put meanwhile.
            InitialPosition::Latest => {
                let pinned = manifests
                    .pin_latest_start(started_at.timestamp_millis())
                    .await?;
                StartPosition::AtTimestamp(
                    chrono::DateTime::from_timestamp_millis(pinned).unwrap_or(started_at),
                )
            }
            InitialPosition::AtTimestamp => {
                StartPosition::AtTimestamp(pipeline.kinesis.initial_timestamp.unwrap_or(started_at))
            }
        };
        let source_client = client.clone();
        let mut source = StreamSource::new(
            client,
            &spec.stream,
            initial,
            pipeline.engine.max_get_records_per_second,
        )
        .with_startup_timeout(
            (mode == RunMode::AvailableNow).then_some(pipeline.engine.startup_timeout),
        )
        .continue_after_expiry(pipeline.engine.on_lost_stream == LostStreamPolicy::Restart)
        .with_budget(budget);
        if mode == RunMode::AvailableNow {
            // The run ends at the records that were there when it started.
            source.end_after(started_at.timestamp_millis());
        }
        source.refresh_shards(cancel).await?;
        let facts = stream_facts(&source_client, &spec.stream).await?;
        let stream_created_ms = facts.created_ms;
        let committed = table.committed_batch().await?.unwrap_or(0);
        let mut foreign = BTreeSet::new();
        if committed > 0 {
            let checkpoint = Checkpoint {
                batch_id: committed,
                table_uri: &spec.table_uri,
                stream_created_ms,
                retention: facts.retention,
            };
            foreign = resume(
                &mut source,
                &manifests,
                &checkpoint,
                pipeline.engine.on_lost_stream,
                cancel,
            )
            .await?;
        }
        Ok(Self {
            name: spec.name.clone(),
            source,
            decoder,
            split_rule: SplitRule::new(
                &spec.stream,
                spec.schema_path.clone(),
                &spec.schema_sql,
                &spec.sql,
            ),
            cleaning,
            output_schema,
            table,
            dead_letters,
            table_maintenance: Maintainer::new(&pipeline.maintenance),
            dead_letter_maintenance: Maintainer::new(&pipeline.maintenance),
            manifests,
            limits: BatchLimits {
                max_records: pipeline.engine.max_batch_records,
                max_bytes: pipeline.engine.max_batch_bytes,
                max_wait: pipeline.engine.trigger_interval,
            },
            committed,
            stream_created_ms,
            caught_up: false,
            on_lost_stream: pipeline.engine.on_lost_stream,
            foreign,
            tip_marked: None,
            progress,
            metrics: StreamMetrics::new(&spec.stream),
            summary: StreamSummary {
                stream: spec.name.clone(),
                last_batch_id: committed,
                ..StreamSummary::default()
            },
        })
    }

    /// The Kinesis stream's name.
    pub fn stream(&self) -> &str {
        self.source.stream()
    }

    /// Runs batches until cancelled or, with [`RunMode::AvailableNow`], caught up.
    pub async fn run(
        mut self,
        mode: RunMode,
        cancel: &CancellationToken,
    ) -> Result<StreamSummary, EngineError> {
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let started = Instant::now();
            // Collecting waits for records (up to the trigger interval): no sleep here.
            let Some(planned) = self.plan(cancel).await? else {
                if self.caught_up && !cancel.is_cancelled() {
                    self.mark_tip().await?;
                }
                if cancel.is_cancelled() || (mode == RunMode::AvailableNow && self.caught_up) {
                    break;
                }
                continue;
            };
            self.process(planned, started).await?;
        }
        self.table_maintenance.at_stop(&mut self.table).await;
        self.dead_letter_maintenance
            .at_stop(&mut self.dead_letters)
            .await;
        Ok(self.summary)
    }

    /// The next batch: a pending plan from before a restart (replayed exactly), or new records.
    /// `None` when there is nothing to do right now.
    async fn plan(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<PlannedBatch>, EngineError> {
        // Another engine may have committed past this one: never plan a batch the table holds.
        let table_committed = self.table.committed_batch().await?.unwrap_or(0);
        if table_committed > self.committed {
            self.catch_up_to(table_committed).await?;
        }
        let batch_id = self.committed + 1;
        let started = Instant::now();
        if let Some(pending) = self.manifests.get(batch_id).await? {
            return self.replay_pending(pending, started, cancel).await;
        }
        let collected = self.source.collect_batch(self.limits, cancel).await?;
        self.caught_up = collected.caught_up;
        if collected.records.is_empty() {
            return Ok(None);
        }
        let fetch = started.elapsed();
        let bytes = collected.records.iter().map(|r| r.data.len()).sum();
        let (decoded, decode) = self
            .decode(collected.records, batch_id)
            .await
            .map_err(EngineError::Internal)?;
        let manifest = BatchManifest {
            batch_id,
            stream: self.source.stream().to_owned(),
            ranges: collected.ranges,
            positions: self.source.positions(),
            planned_at: Utc::now(),
            stream_created_ms: self.stream_created_ms,
            shard_starts: self.source.shard_starts(),
            split: Some(self.split_rule.record(&decoded)),
        };
        let manifest = match self.manifests.create(&manifest).await? {
            ManifestOutcome::Created => manifest,
            ManifestOutcome::Existing(theirs) if theirs.ranges == manifest.ranges => {
                self.split_rule
                    .check(&theirs, &decoded, None)
                    .map_err(EngineError::SplitChanged)?;
                *theirs
            }
            // Another engine planned this batch first: its plan is the batch.
            ManifestOutcome::Existing(theirs) => {
                drop(collected.lease);
                return self.replay_pending(*theirs, started, cancel).await;
            }
            // Another engine planned it, committed it and 20 more, and pruned it meanwhile:
            // this engine was behind; it catches up on the next round.
            ManifestOutcome::Vanished => {
                self.caught_up = false;
                return Ok(None);
            }
        };
        Ok(Some(PlannedBatch {
            manifest,
            decoded,
            bytes,
            fetch,
            decode,
            millis_behind: collected.millis_behind,
            replayed: false,
            records_gone: false,
            lease: collected.lease,
        }))
    }

    /// Records the shards found at their tip after the committed batch, when that adds to what
    /// its manifest or the last marker said (at most every half hour while nothing changes).
    async fn mark_tip(&mut self) -> Result<(), EngineError> {
        if self.committed == 0 {
            return Ok(());
        }
        let fresh = self.tip_marked.is_some_and(|(batch, at)| {
            batch == self.committed && at.elapsed() < Duration::from_secs(1800)
        });
        if fresh {
            return Ok(());
        }
        let marker = TipMarker {
            batch_id: self.committed,
            shards: self.source.shards_at_tip(),
            observed_at: Utc::now(),
        };
        self.manifests.write_tip(&marker).await?;
        self.tip_marked = Some((self.committed, Instant::now()));
        Ok(())
    }

    /// Decodes a batch's records in one canonical order (shard, then sequence), so that a replay
    /// feeds the SQL exactly the rows, in exactly the order, of the first attempt. Runs on a
    /// blocking thread: the streams decode in parallel, and the shard consumers are not held up.
    async fn decode(
        &self,
        mut records: Vec<KinesisRecord>,
        batch_id: i64,
    ) -> Result<(DecodedBatch, Duration), String> {
        let decoder = self.decoder.clone();
        let decoding = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            // Stable: within a shard, records already come in sequence order.
            records.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
            decoder
                .decode(&records)
                .map(|decoded| (decoded, t.elapsed()))
        });
        match decoding.await {
            Ok(Ok(decoded)) => Ok(decoded),
            Ok(Err(e)) => Err(format!("decoding batch {batch_id}: {e}")),
            Err(e) => Err(format!("decoding batch {batch_id}: {e}")),
        }
    }

    async fn process(
        &mut self,
        planned: PlannedBatch,
        started: Instant,
    ) -> Result<(), EngineError> {
        let batch_id = planned.manifest.batch_id;
        // Held until the batch is committed (or given up), then given back to the readers.
        let lease = planned.lease;
        let decoded = planned.decoded;
        let dead = decoded.dead_letters.len();
        let rows_in = decoded.rows.num_rows() + dead;

        let t = Instant::now();
        let cleaned = self.cleaning.apply(decoded.rows).await?;
        let sql = t.elapsed();
        let rows_out: usize = cleaned.iter().map(|b| b.num_rows()).sum();

        let info = commit_info(&planned.manifest, planned.records_gone);
        let mut write = Duration::ZERO;
        let mut commit = Duration::ZERO;
        // Dead letters of a batch the table already holds were committed with it (or belong to a
        // stale plan of a lagging engine): never commit them again.
        let table_holds_batch = dead > 0
            && self
                .table
                .committed_batch()
                .await?
                .is_some_and(|done| done >= batch_id);
        if dead > 0 && !table_holds_batch {
            let batch =
                dead_letter_batch(self.source.stream(), &decoded.dead_letters).map_err(|e| {
                    EngineError::Internal(format!("dead letters of batch {batch_id}: {e}"))
                })?;
            if let CommitOutcome::Committed {
                write: w,
                commit: c,
                ..
            } = self
                .dead_letters
                .commit(batch_id, &dead_letter_schema(), &[batch], info.clone())
                .await?
            {
                write += w;
                commit += c;
            }
        }
        let outcome = if table_holds_batch {
            CommitOutcome::AlreadyCommitted
        } else {
            self.table
                .commit(batch_id, &self.output_schema, &cleaned, info)
                .await?
        };
        let version = match outcome {
            CommitOutcome::Committed {
                version,
                write: w,
                commit: c,
                ..
            } => {
                write += w;
                commit += c;
                version
            }
            CommitOutcome::AlreadyCommitted => {
                // Another engine committed this batch id (the same plan, or this engine's plan was
                // stale): continue after whatever the table holds now.
                let committed = self.table.committed_batch().await?.unwrap_or(batch_id);
                self.catch_up_to(committed).await?;
                return Ok(());
            }
        };
        self.committed = batch_id;
        drop(lease);
        // From here on, pending batches are planned on the stream as it is now.
        self.foreign.clear();
        self.manifests.prune(batch_id).await;
        // Between this commit and the stream's next: a compaction never races its appends.
        self.table_maintenance
            .after_commit(&mut self.table, usize::from(rows_out > 0))
            .await;
        if dead > 0 {
            self.dead_letter_maintenance
                .after_commit(&mut self.dead_letters, 1)
                .await;
        }

        self.summary.batches += 1;
        self.summary.records += rows_in as u64;
        self.summary.dead_letters += dead as u64;
        self.summary.last_batch_id = batch_id;
        let elapsed = started.elapsed().as_secs_f64().max(1e-6);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let report = BatchProgress {
            stream: self.name.clone(),
            table: self.table.uri().to_owned(),
            batch_id,
            rows_in,
            bytes_in: planned.bytes,
            rows_out,
            dead_letters: dead,
            rows_per_second: rows_in as f64 / elapsed,
            fetch_ms: ms(planned.fetch),
            decode_ms: ms(planned.decode),
            sql_ms: ms(sql),
            write_ms: ms(write),
            commit_ms: ms(commit),
            millis_behind_latest: planned.millis_behind,
            delta_version: Some(version),
            replayed: planned.replayed,
        };
        tracing::debug!(stream = %self.name, batch_id, rows_in, "batch committed");
        self.metrics.batch_committed(&report);
        readiness().passed(self.source.stream());
        // The receiver may be gone (a library caller that does not watch progress): not an error.
        let _ = self.progress.send(report);
        Ok(())
    }
}

/// What a commit records in its `commitInfo` for people reading the log (the checkpoint itself is
/// the `txn` action plus the manifest).
fn commit_info(manifest: &BatchManifest, records_gone: bool) -> Map<String, Value> {
    let ranges: Map<String, Value> = manifest
        .ranges
        .iter()
        .map(|(shard, r)| {
            (
                shard.clone(),
                json!({"first": r.first.as_str(), "last": r.last.as_str()}),
            )
        })
        .collect();
    let mut info = Map::new();
    info.insert(
        "kinesisDelta".to_owned(),
        json!({"stream": manifest.stream, "batchId": manifest.batch_id, "ranges": Value::Object(ranges), "recordsGone": records_gone}),
    );
    info
}
