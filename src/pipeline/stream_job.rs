//! One stream's micro-batch loop, shard by shard: collect records from the shards, write one plan
//! per shard (write-ahead), decode and clean each plan's records, commit every plan of the batch
//! in one Delta commit with one `txn` per shard, repeat. The protocol is in `doc/DESIGN.md`.

mod checkpoints;
mod lineage;
mod ownership;
mod pending;
mod plan;
mod side_tables;
mod upgrade;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::Utc;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

pub use lineage::sql_fingerprint;
use lineage::{Lineage, PlanLineage, Table};
pub use side_tables::RAW_STARTS_AFTER;
use side_tables::{SideCommitted, SideTable};

use super::EngineError;
use super::leases::ShardLeases;
use super::maintenance::Maintainer;
use super::resume::{StreamNow, stream_facts};
use super::split::SplitRule;
use crate::config::{
    ConfigError, ConsumerMode, InitialPosition, LostStreamPolicy, Pipeline, StreamSpec,
};
use crate::decode::{
    DecodedBatch, METADATA_COLUMNS, RAW_TABLE_COLUMNS, RecordDecoder, dead_letter_batch,
    dead_letter_schema, raw_records_batch, raw_records_schema, records_read_batch,
};
use crate::lease::LeaseWorker;
use crate::progress::BatchProgress;
use crate::sink::{DeltaSink, ManifestLog, Numbering, PlanRows, ShardPlan, ShardPlanLog};
use crate::source::{
    BatchLimits, BudgetLease, FanOutConsumer, KinesisClient, KinesisRecord, MemoryBudget,
    StartPosition, StreamSource,
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
    /// The number of the last batch this run committed (batches are numbered per run, for logs).
    pub last_batch_id: i64,
}

/// One shard's part of a batch: its plan and how its records decoded.
struct PlanPart {
    plan: ShardPlan,
    decoded: DecodedBatch,
    /// Its Kinesis records as read, for the raw table (when the stream keeps one).
    raw: Option<RecordBatch>,
    /// How many Kinesis records it holds (under `restart`, those of its range that remained).
    records: usize,
}

impl PlanPart {
    fn new(plan: ShardPlan, read: ShardRead) -> Self {
        Self {
            plan,
            decoded: read.decoded,
            raw: read.raw,
            records: read.records,
        }
    }
}

/// One shard's records of a batch: decoded, as raw rows when the stream keeps a raw table, and
/// how many.
struct ShardRead {
    decoded: DecodedBatch,
    raw: Option<RecordBatch>,
    records: usize,
}

/// Each shard's records read.
type Decoded = BTreeMap<String, ShardRead>;

/// A batch ready to commit: one part per shard.
struct PlannedBatch {
    parts: Vec<PlanPart>,
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
    table_maintenance: Maintainer,
    dead_letters: SideTable,
    /// The raw table, when the stream keeps one.
    raw: Option<SideTable>,
    /// The shards' plans and tip markers.
    plans: ShardPlanLog,
    /// The stream-level files: the checkpoint of earlier versions, the fence, the LATEST pin.
    manifests: ManifestLog,
    limits: BatchLimits,
    /// The stream's transaction id; each shard's is `<app_id>/<shard id>`.
    app_id: String,
    /// This process, named in the plans it writes.
    worker: String,
    /// Each shard's newest committed plan (0: none), as this worker last saw the table.
    committed: BTreeMap<String, i64>,
    /// Shards whose committed checkpoint says they were read to their end.
    finished: BTreeSet<String>,
    /// Plans found at start, made but maybe not committed: replayed first.
    pending: Vec<ShardPlan>,
    /// Batches committed by this run (numbers them in logs and progress lines).
    batches: i64,
    /// The stream-level checkpoint of an earlier version, where shards without plans start.
    upgraded_from: Option<upgrade::UpgradedFrom>,
    /// With `[leases]`: which shards this process may read.
    leases: Option<ShardLeases>,
    /// The shards read now (with leases, those held; their checkpoints were read on taking them).
    owned: BTreeSet<String>,
    /// Shards whose lease exists (added by this process or found).
    leased: BTreeSet<String>,
    /// When the parents of held children were last looked up in the table.
    parents_checked: Option<Instant>,
    stream_now: StreamNow,
    /// The last collect found every shard at its end.
    caught_up: bool,
    on_lost_stream: LostStreamPolicy,
    /// Shards resuming found to be of another incarnation (and was told to read anew).
    foreign: BTreeSet<String>,
    /// Per shard, the committed plan last recorded in a tip marker, and when.
    tip_marked: BTreeMap<String, (i64, Instant)>,
    progress: UnboundedSender<BatchProgress>,
    metrics: StreamMetrics,
    summary: StreamSummary,
    /// The fingerprint of the schema and SQL, recorded in every commit.
    sql_fingerprint: String,
    /// The enhanced fan-out consumer to deregister when the run ends (`kinesis.deregister_consumer`).
    deregister: Option<(Arc<FanOutConsumer>, KinesisClient)>,
}

impl StreamJob {
    /// Validates the stream's schema and SQL, opens its tables and resumes every shard from its
    /// committed checkpoint.
    #[allow(clippy::too_many_arguments)] // each is one of the run's shared parts
    pub(crate) async fn start(
        pipeline: &Pipeline,
        spec: &StreamSpec,
        mode: RunMode,
        client: KinesisClient,
        budget: MemoryBudget,
        leases: Option<ShardLeases>,
        progress: UnboundedSender<BatchProgress>,
        cancel: &CancellationToken,
    ) -> Result<Self, EngineError> {
        let (decoder, cleaning) = super::decoder_and_cleaning(spec).await?;
        let output_schema = cleaning.output_schema();
        let app_id = spec.app_id(&pipeline.name);
        let table = DeltaSink::open_with(&spec.table_uri, &app_id, &pipeline.storage).await?;
        table.check_schema(&output_schema)?;
        // No min/max statistics for the raw bytes: they serve no query and bloat the log. Those
        // of `_plan` let `rebuild` skip the files of plans it does not take.
        let stats = |extra: &[&str]| {
            let columns: Vec<&str> = METADATA_COLUMNS.iter().chain(extra).copied().collect();
            columns.join(",")
        };
        let dead_letters = SideTable::new(
            DeltaSink::open_with(&spec.dead_letter_uri, &app_id, &pipeline.storage)
                .await?
                .with_table_property("delta.dataSkippingStatsColumns", &stats(&["_plan"])),
            &pipeline.maintenance,
        );
        let raw = match &spec.raw_uri {
            Some(uri) => Some(SideTable::new(
                DeltaSink::open_with(uri, &app_id, &pipeline.storage)
                    .await?
                    .with_table_property(
                        "delta.dataSkippingStatsColumns",
                        &stats(&RAW_TABLE_COLUMNS),
                    ),
                &pipeline.maintenance,
            )),
            None => None,
        };
        let manifests = ManifestLog::new(table.object_store(), &pipeline.name, &spec.stream);
        if let Some(mark) = manifests.rebuild_mark().await? {
            return Err(EngineError::Config(ConfigError::Invalid(format!(
                "a rebuild of stream `{}` began at {} and has not finished: it is still running, or it stopped between its table commit and its dead-letter commit (records it moved between the two tables may then be in both or in neither). Wait for it to end, or run `kinesis-delta rebuild {}` again to finish it; then start the engine",
                spec.name, mark.started_at, spec.name
            ))));
        }
        let plans = ShardPlanLog::new(table.object_store(), &pipeline.name, &spec.stream);

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
        let fan_out = match (
            pipeline.kinesis.consumer_mode,
            &pipeline.kinesis.consumer_name,
        ) {
            (ConsumerMode::EnhancedFanOut, Some(name)) => Some(Arc::new(
                FanOutConsumer::register(&client, &spec.stream, name, cancel).await?,
            )),
            _ => None,
        };
        let deregister = fan_out
            .clone()
            .filter(|_| pipeline.kinesis.deregister_consumer)
            .map(|consumer| (consumer, client.clone()));
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
        .with_budget(budget)
        .with_fan_out(fan_out);
        if mode == RunMode::AvailableNow {
            // The run ends at the records that were there when it started.
            source.end_after(started_at.timestamp_millis());
        }
        source.refresh_shards(cancel).await?;
        let stream_now = stream_facts(&source_client, &spec.stream).await?;
        let mut job = Self {
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
            table_maintenance: Maintainer::new(&pipeline.maintenance),
            dead_letters,
            raw,
            plans,
            manifests,
            limits: BatchLimits {
                max_records: pipeline.engine.max_batch_records,
                max_bytes: pipeline.engine.max_batch_bytes,
                max_wait: pipeline.engine.trigger_interval,
            },
            app_id,
            worker: leases.as_ref().map_or_else(
                || LeaseWorker::unique_id(&LeaseWorker::host_name()),
                |l| l.worker().to_owned(),
            ),
            committed: BTreeMap::new(),
            finished: BTreeSet::new(),
            pending: Vec::new(),
            batches: 0,
            upgraded_from: None,
            leases,
            owned: BTreeSet::new(),
            leased: BTreeSet::new(),
            parents_checked: None,
            stream_now,
            caught_up: false,
            on_lost_stream: pipeline.engine.on_lost_stream,
            foreign: BTreeSet::new(),
            tip_marked: BTreeMap::new(),
            progress,
            metrics: StreamMetrics::new(&spec.stream),
            summary: StreamSummary {
                stream: spec.name.clone(),
                ..StreamSummary::default()
            },
            deregister,
            sql_fingerprint: sql_fingerprint(&spec.schema_sql, &spec.sql),
        };
        job.upgraded_from = job.fence_stream_level(cancel).await?;
        job.check_side_tables().await?;
        if job.leases.is_some() {
            // Nothing is read before a lease is held; each shard resumes when it is taken.
            job.source.set_owned(Some(BTreeSet::new()));
        } else {
            let every: BTreeSet<String> = job.known_shards().await?;
            job.owned.clone_from(&every);
            job.resume_shards(&every, cancel).await?;
        }
        Ok(job)
    }

    /// The Kinesis stream's name.
    pub fn stream(&self) -> &str {
        self.source.stream()
    }

    /// A shard's transaction id.
    fn shard_app_id(&self, shard: &str) -> String {
        crate::sink::shard_app_id(&self.app_id, shard)
    }

    /// Runs batches until cancelled or, with [`RunMode::AvailableNow`], caught up; then
    /// deregisters the enhanced fan-out consumer if asked to, however the run ended.
    pub async fn run(
        mut self,
        mode: RunMode,
        cancel: &CancellationToken,
    ) -> Result<StreamSummary, EngineError> {
        let outcome = self.batches(mode, cancel).await;
        if let Some((consumer, client)) = &self.deregister
            && let Err(e) = consumer.deregister(client).await
        {
            tracing::warn!(stream = %self.stream(), consumer = consumer.name(), error = %e, "could not deregister the enhanced fan-out consumer; it stays registered (and billed)");
        }
        outcome.map(|()| self.summary)
    }

    async fn batches(
        &mut self,
        mode: RunMode,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let started = Instant::now();
            // Collecting waits for records (up to the trigger interval): no sleep here.
            let Some(planned) = self.plan(cancel).await? else {
                if self.caught_up && !cancel.is_cancelled() {
                    self.mark_tips().await?;
                }
                if cancel.is_cancelled() || (mode == RunMode::AvailableNow && self.caught_up) {
                    break;
                }
                continue;
            };
            self.process(planned, started).await?;
        }
        // The tables' compactions at stop run at once: a stop waits for the slowest, not the sum.
        let raw = async {
            if let Some(raw) = &mut self.raw {
                raw.at_stop().await;
            }
        };
        tokio::join!(
            self.table_maintenance.at_stop(&mut self.table),
            self.dead_letters.at_stop(),
            raw
        );
        Ok(())
    }

    /// Decodes each shard's records (in sequence order, as they come), so that a replay of a
    /// plan feeds the SQL exactly the rows, in exactly the order, of the first attempt. Runs on a
    /// blocking thread: the streams decode in parallel, and the shard consumers are not held up.
    async fn decode(
        &self,
        by_shard: BTreeMap<String, Vec<KinesisRecord>>,
    ) -> Result<(Decoded, Duration), EngineError> {
        let decoder = self.decoder.clone();
        let ranges = self.source.hash_ranges();
        let keep_raw = self.raw.is_some();
        let stream = self.source.stream().to_owned();
        let decoding = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let mut decoded = BTreeMap::new();
            for (shard, records) in by_shard {
                let batch = decoder
                    .decode_in_range(&records, ranges.get(&shard).copied())
                    .map_err(|e| format!("decoding records of {shard}: {e}"))?;
                let raw = if keep_raw && !records.is_empty() {
                    Some(
                        records_read_batch(&stream, &records, ranges.get(&shard).copied())
                            .map_err(|e| format!("raw rows of {shard}: {e}"))?,
                    )
                } else {
                    None
                };
                let read = ShardRead {
                    decoded: batch,
                    raw,
                    records: records.len(),
                };
                decoded.insert(shard, read);
            }
            Ok::<_, String>((decoded, t.elapsed()))
        });
        match decoding.await {
            Ok(Ok(decoded)) => Ok(decoded),
            Ok(Err(e)) => Err(EngineError::Internal(e)),
            Err(e) => Err(EngineError::Internal(format!("decoding: {e}"))),
        }
    }

    /// Cleans each plan's rows on its own (a plan's rows never depend on which plans share its
    /// batch), commits the dead letters, then the rows, each plan under its shard's `txn`.
    async fn process(
        &mut self,
        planned: PlannedBatch,
        started: Instant,
    ) -> Result<(), EngineError> {
        // Held until the batch is committed (or given up), then given back to the readers.
        let lease = planned.lease;
        let batch_id = self.batches + 1;
        let t = Instant::now();
        let mut rows = Vec::with_capacity(planned.parts.len());
        let mut dead_rows = Vec::new();
        for part in &planned.parts {
            let app_id = self.shard_app_id(&part.plan.shard);
            let cleaned = if part.decoded.rows.num_rows() > 0 {
                self.cleaning.apply(part.decoded.rows.clone()).await?
            } else {
                Vec::new()
            };
            rows.push(PlanRows {
                app_id: app_id.clone(),
                version: part.plan.version,
                rows: cleaned,
            });
            if !part.decoded.dead_letters.is_empty() {
                let batch = dead_letter_batch(
                    self.source.stream(),
                    &part.decoded.dead_letters,
                    Some(part.plan.version),
                )
                .map_err(|e| EngineError::Internal(format!("dead letters of {app_id}: {e}")))?;
                dead_rows.push(PlanRows {
                    app_id,
                    version: part.plan.version,
                    rows: vec![batch],
                });
            }
        }
        let sql = t.elapsed();
        // Each plan's part, under its transaction id, with the rows it adds to each table.
        let committed: Vec<PlanLineage> = planned
            .parts
            .iter()
            .zip(&rows)
            .map(|(part, cleaned)| PlanLineage {
                app_id: cleaned.app_id.clone(),
                part,
                rows: cleaned.rows.iter().map(RecordBatch::num_rows).sum(),
            })
            .collect();
        let lineage = Lineage {
            stream: self.source.stream(),
            worker: &self.worker,
            batch_id,
            sql: &self.sql_fingerprint,
            records_gone: planned.records_gone,
            plans: &committed,
        };

        // The side tables first: a plan the table holds is never committed to them again.
        let mut raw_plans = Vec::new();
        for (part, cleaned) in planned.parts.iter().zip(&rows) {
            if let Some(read) = &part.raw {
                let batch = raw_records_batch(read, part.plan.version).map_err(|e| {
                    EngineError::Internal(format!("raw rows of {}: {e}", cleaned.app_id))
                })?;
                raw_plans.push(PlanRows {
                    app_id: cleaned.app_id.clone(),
                    version: part.plan.version,
                    rows: vec![batch],
                });
            }
        }
        let recorded = if dead_rows.is_empty() && raw_plans.is_empty() {
            BTreeMap::new()
        } else {
            let app_ids: Vec<String> = rows.iter().map(|p| p.app_id.clone()).collect();
            self.table.recorded(&app_ids).await?
        };
        let dead_done = self
            .dead_letters
            .commit(&dead_letter_schema(), dead_rows, &recorded, &|kept| {
                lineage.commit_info(kept, Table::DeadLetters)
            })
            .await?;
        let raw_done = match &mut self.raw {
            Some(raw) => {
                raw.commit(&raw_records_schema(), raw_plans, &recorded, &|kept| {
                    lineage.commit_info(kept, Table::Raw)
                })
                .await?
            }
            None => SideCommitted::default(),
        };
        let mut write = dead_done.write + raw_done.write;
        let mut commit = dead_done.commit + raw_done.commit;
        let done = self
            .table
            .commit_plans_with(
                &self.output_schema,
                &rows,
                Numbering::Consecutive,
                &|kept| lineage.commit_info(kept, Table::Cleaned),
            )
            .await?;
        write += done.write;
        commit += done.commit;
        if let Some(raw) = &mut self.raw {
            // Plans this commit recorded with none of their records (gone, under `restart`).
            let without_records: Vec<PlanRows> = planned
                .parts
                .iter()
                .zip(&rows)
                .filter(|(part, cleaned)| {
                    part.plan.range.is_some()
                        && part.records == 0
                        && done.committed.contains(&cleaned.app_id)
                })
                .map(|(part, cleaned)| PlanRows {
                    app_id: cleaned.app_id.clone(),
                    version: part.plan.version,
                    rows: Vec::new(),
                })
                .collect();
            let recorded = raw
                .record_without_rows(without_records, &|kept| {
                    lineage.commit_info(kept, Table::Raw)
                })
                .await?;
            write += recorded.write;
            commit += recorded.commit;
        }

        let mut rows_in = 0;
        let mut rows_out = 0;
        let mut dead = 0;
        for (part, cleaned) in planned.parts.iter().zip(&rows) {
            let shard = &part.plan.shard;
            if done.dropped.contains(&cleaned.app_id) {
                // Another worker committed this plan: the shard goes on after what the table holds.
                self.table.metrics().already_committed();
                self.catch_up(shard).await?;
                continue;
            }
            self.committed.insert(shard.clone(), part.plan.version);
            if part.plan.position.finished {
                self.finished.insert(shard.clone());
                if let Some(leases) = &self.leases {
                    leases.finished(self.source.stream(), shard);
                }
            }
            self.plans.prune(shard, part.plan.version).await;
            rows_in += part.decoded.rows.num_rows() + part.decoded.dead_letters.len();
            rows_out += cleaned.rows.iter().map(|b| b.num_rows()).sum::<usize>();
            dead += part.decoded.dead_letters.len();
        }
        drop(lease);
        let Some(version) = done.version else {
            return Ok(());
        };
        // From here on, pending plans are made on the stream as it is now.
        self.foreign.clear();
        self.batches = batch_id;
        // Between this commit and the stream's next: a compaction never races its appends.
        self.table_maintenance
            .after_commit(&mut self.table, usize::from(rows_out > 0))
            .await;
        if dead > 0 {
            self.dead_letters.after_commit().await;
        }
        if let Some(raw) = &mut self.raw
            && raw_done.rows > 0
        {
            raw.after_commit().await;
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
            holds: self
                .leases
                .is_some()
                .then(|| self.owned.iter().map(|s| short_shard_id(s)).collect()),
        };
        tracing::debug!(stream = %self.name, batch_id, rows_in, "batch committed");
        self.metrics.batch_committed(&report);
        readiness().passed(self.source.stream());
        // The receiver may be gone (a library caller that does not watch progress): not an error.
        let _ = self.progress.send(report);
        Ok(())
    }
}

/// `shardId-000000000003` as `3` (other ids as they are).
fn short_shard_id(shard: &str) -> String {
    shard
        .strip_prefix("shardId-")
        .map(|n| n.trim_start_matches('0'))
        .map_or_else(
            || shard.to_owned(),
            |n| {
                if n.is_empty() {
                    "0".to_owned()
                } else {
                    n.to_owned()
                }
            },
        )
}
