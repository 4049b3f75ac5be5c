//! Planning a batch: the records collected from the shards become one plan per shard, written
//! put-if-absent before anything is committed. A plan another worker wrote first for the same
//! shard and number is the shard's part instead: it is read again exactly.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{PlanPart, PlannedBatch, StreamJob};
use crate::decode::DecodedBatch;
use crate::pipeline::{EngineError, SplitChange};
use crate::sink::{PlanOutcome, ShardPlan};
use crate::source::KinesisRecord;

impl StreamJob {
    /// The next batch: plans found pending at start (replayed exactly), or new records. `None`
    /// when there is nothing to do right now.
    pub(super) async fn plan(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<PlannedBatch>, EngineError> {
        self.follow_leases(cancel).await?;
        let started = Instant::now();
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            return self.replay_plans(pending, started, cancel).await;
        }
        let collected = self.source.collect_batch(self.limits, cancel).await?;
        self.caught_up = collected.caught_up;
        let positions = self.source.positions();
        // A shard found read to its end says so in a plan of its own if it gave no records: its
        // children wait for that.
        let ended: Vec<String> = positions
            .iter()
            .filter(|(shard, p)| {
                p.finished
                    && self.source.is_owned(shard)
                    && !self.finished.contains(*shard)
                    && !collected.ranges.contains_key(*shard)
            })
            .map(|(shard, _)| shard.clone())
            .collect();
        if collected.records.is_empty() && ended.is_empty() {
            return Ok(None);
        }
        let fetch = started.elapsed();
        let bytes = collected.bytes;
        let mut by_shard: BTreeMap<String, Vec<KinesisRecord>> = BTreeMap::new();
        for record in collected.records {
            by_shard
                .entry(record.shard_id.to_string())
                .or_default()
                .push(record);
        }
        for shard in ended {
            by_shard.entry(shard).or_default();
        }
        let (decoded, decode) = self.decode(by_shard).await?;
        let starts = self.source.shard_starts();
        let mut parts = Vec::with_capacity(decoded.len());
        let mut theirs = Vec::new();
        for (shard, read) in decoded {
            let plan = ShardPlan {
                version: self.committed.get(&shard).copied().unwrap_or(0) + 1,
                range: collected.ranges.get(&shard).cloned(),
                position: positions.get(&shard).cloned().unwrap_or_default(),
                stream_created_ms: self.stream_now.created_ms,
                shard_start: starts.get(&shard).cloned(),
                split: Some(self.split_rule.record(&read.decoded)),
                planned_at: Utc::now(),
                worker: self.worker.clone(),
                shard,
            };
            let existing = match self.plans.create(&plan).await? {
                PlanOutcome::Created => {
                    parts.push(PlanPart::new(plan, read));
                    continue;
                }
                PlanOutcome::Existing(existing) => existing,
                // It planned it, committed it and 20 more, and pruned it meanwhile: this worker
                // was behind on that shard.
                PlanOutcome::Vanished => {
                    self.catch_up(&plan.shard).await?;
                    continue;
                }
            };
            if self.table_version(&plan.shard).await? >= existing.version {
                // Another worker planned and committed it: this worker was behind on the shard.
                self.catch_up(&plan.shard).await?;
                continue;
            }
            match existing {
                // Another attempt planned the same records (an earlier run of this worker that
                // stopped before committing, say): its plan is the part.
                existing if existing.range == plan.range => {
                    self.check_split(&existing, &read.decoded, None)
                        .map_err(EngineError::SplitChanged)?;
                    parts.push(PlanPart::new(*existing, read));
                }
                // Another worker planned this shard's next part first: read its plan instead, and
                // drop what was read past it.
                existing => theirs.push(*existing),
            }
        }
        let mut replayed = false;
        let mut records_gone = false;
        if !theirs.is_empty() {
            let Some(batch) = self.replay_plans(theirs, started, cancel).await? else {
                return Ok(None);
            };
            replayed = true;
            records_gone = batch.records_gone;
            parts.extend(batch.parts);
        }
        if parts.is_empty() {
            self.caught_up = false;
            return Ok(None);
        }
        Ok(Some(PlannedBatch {
            parts,
            bytes,
            fetch,
            decode,
            millis_behind: collected.millis_behind,
            replayed,
            records_gone,
            lease: collected.lease,
        }))
    }

    /// Checks that `decoded` splits a plan's records as the plan recorded.
    pub(super) fn check_split(
        &self,
        plan: &ShardPlan,
        decoded: &DecodedBatch,
        present: Option<&std::collections::BTreeSet<(String, crate::sequence::SequenceNumber)>>,
    ) -> Result<(), Box<SplitChange>> {
        let label = format!("plan {} of shard {}", plan.version, plan.shard);
        self.split_rule
            .check(plan.split.as_ref(), &label, decoded, present)
    }
}
