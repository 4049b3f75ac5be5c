//! Plans made but not known to be committed (before a restart, or by another worker): read again
//! exactly, or, when some of their records are gone and the user accepted that, finished with what
//! remains. And catching up with a shard another worker committed ahead of this one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{PlanPart, PlannedBatch, ShardRead, StreamJob};
use crate::config::LostStreamPolicy;
use crate::decode::DecodedBatch;
use crate::pipeline::EngineError;
use crate::pipeline::resume::{incarnation_changed, lost_stream};
use crate::sink::ShardPlan;
use crate::source::{KinesisRecord, ReplayRules, ShardPosition};

impl StreamJob {
    /// The plans `pending`, ready to commit; their shards then stand where the plans leave them.
    ///
    /// A plan made on a stream that was since recreated has no records left: the policy decides,
    /// and `restart` commits it empty. Otherwise it is read exactly; under `restart` a shard whose
    /// part is gone gives what remains of it, or nothing when resuming found the shard to be of
    /// another incarnation.
    pub(super) async fn replay_plans(
        &mut self,
        pending: Vec<ShardPlan>,
        started: Instant,
        cancel: &CancellationToken,
    ) -> Result<Option<PlannedBatch>, EngineError> {
        let mut abandoned = Vec::new();
        let mut readable = Vec::new();
        for plan in pending {
            let start = plan
                .shard_start
                .as_deref()
                .map(|s| (plan.shard.as_str(), s));
            if incarnation_changed(
                plan.stream_created_ms,
                start,
                &self.source,
                self.stream_now.created_ms,
            ) {
                if let Some(stop) = lost_stream(
                    self.source.stream(),
                    plan.stream_created_ms,
                    self.stream_now.created_ms,
                    self.on_lost_stream,
                ) {
                    return Err(stop);
                }
                tracing::warn!(stream = %self.name, shard = %plan.shard, plan = plan.version, "a plan of the old stream is committed without its records, which are gone");
                abandoned.push(plan);
            } else {
                readable.push(plan);
            }
        }
        let ranges = readable
            .iter()
            .filter_map(|p| p.range.clone().map(|r| (p.shard.clone(), r)))
            .collect();
        for plan in &readable {
            tracing::info!(stream = %self.name, shard = %plan.shard, plan = plan.version, "reading a planned part again");
        }
        let rules = ReplayRules {
            foreign: self.foreign.clone(),
            what_remains: self.on_lost_stream == LostStreamPolicy::Restart,
        };
        let replayed = self.source.replay(&ranges, &rules, cancel).await?;
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let left_out = replayed.left_out;
        for plan in &readable {
            if left_out.contains(&plan.shard) {
                // Another incarnation: read anew.
                self.source.start_at_trim_horizon(&plan.shard);
            } else {
                self.source.restore_shard(&plan.shard, &plan.position);
            }
        }
        let records_gone = replayed.partial || !left_out.is_empty() || !abandoned.is_empty();
        if replayed.partial || !left_out.is_empty() {
            tracing::warn!(stream = %self.name, left_out = ?left_out, "some records of a plan are gone (on_lost_stream = restart): committing what remains of it");
        }
        let fetch = started.elapsed();
        let present: BTreeSet<_> = replayed
            .records
            .iter()
            .map(|r| (r.shard_id.to_string(), r.sequence_number.clone()))
            .collect();
        let bytes: usize = replayed.records.iter().map(|r| r.data.len()).sum();
        // Already in memory: counted, but never waited for (the stream may hold the rest itself).
        let lease = self.source.budget().take_available(bytes);
        let mut by_shard: BTreeMap<String, Vec<KinesisRecord>> = readable
            .iter()
            .chain(&abandoned)
            .map(|p| (p.shard.clone(), Vec::new()))
            .collect();
        for record in replayed.records {
            by_shard
                .entry(record.shard_id.to_string())
                .or_default()
                .push(record);
        }
        let (mut decoded, decode) = self.decode(by_shard).await?;
        let mut parts = Vec::with_capacity(readable.len() + abandoned.len());
        for plan in readable {
            let read = decoded
                .remove(&plan.shard)
                .unwrap_or_else(|| self.read_nothing());
            self.check_split(&plan, &read.decoded, records_gone.then_some(&present))
                .map_err(EngineError::SplitChanged)?;
            parts.push(PlanPart::new(plan, read));
        }
        for plan in abandoned {
            // Its shard goes on from where resuming put it.
            parts.push(PlanPart::new(plan, self.read_nothing()));
        }
        Ok(Some(PlannedBatch {
            parts,
            bytes,
            fetch,
            decode,
            millis_behind: 0,
            replayed: true,
            records_gone,
            lease,
        }))
    }

    /// No records read.
    pub(super) fn read_nothing(&self) -> ShardRead {
        let decoded = DecodedBatch {
            rows: arrow::array::RecordBatch::new_empty(self.decoder.row_schema()),
            dead_letters: Vec::new(),
        };
        ShardRead {
            decoded,
            raw: None,
            records: 0,
        }
    }

    /// Puts a shard where the plan the table now records for it left it: another worker committed
    /// the shard ahead of this one. The plan may be pruned meanwhile when that worker runs far
    /// ahead: then the newer committed plan is taken.
    pub(super) async fn catch_up(&mut self, shard: &str) -> Result<(), EngineError> {
        let mut version = 0;
        for _ in 0..3 {
            version = self.table_version(shard).await?;
            if version == 0 {
                // No plan yet: where the stream-level checkpoint of an earlier version left it.
                let position = self
                    .upgraded_from
                    .as_ref()
                    .and_then(|from| from.manifest.positions.get(shard).cloned())
                    .unwrap_or_default();
                self.source.restore_shard(shard, &position);
                self.committed.insert(shard.to_owned(), 0);
                return Ok(());
            }
            if let Some(plan) = self.plans.get(shard, version).await? {
                self.committed.insert(shard.to_owned(), version);
                let start = plan.shard_start.as_deref().map(|s| (shard, s));
                if incarnation_changed(
                    plan.stream_created_ms,
                    start,
                    &self.source,
                    self.stream_now.created_ms,
                ) {
                    // The plan of a shard of the stream before it was recreated: this shard of
                    // the same id has read nothing the table knows (and has not ended).
                    self.source.restore_shard(shard, &ShardPosition::default());
                    return Ok(());
                }
                tracing::info!(stream = %self.name, %shard, plan = version, "another worker committed this shard ahead of this one; continuing after its plan");
                self.source.restore_shard(shard, &plan.position);
                if plan.position.finished {
                    self.finished.insert(shard.to_owned());
                    if let Some(leases) = &self.leases {
                        leases.finished(self.source.stream(), shard);
                    }
                }
                return Ok(());
            }
        }
        Err(EngineError::MissingManifest {
            table: self.table.uri().to_owned(),
            what: format!("plan {version} of shard {shard}"),
        })
    }
}
